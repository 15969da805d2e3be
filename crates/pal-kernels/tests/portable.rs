//! The portable (non-AVX2) code path on the quick grid. Its own test binary, so that forcing the
//! path with `PAL_CPU_PORTABLE` cannot affect other tests.

use pal_kernels::testing::{fresh_seed, run_case, selftest_grid, Backend, Rng};

#[test]
fn portable_path_matches_reference() {
    std::env::set_var("PAL_CPU_PORTABLE", "1");
    assert!(!pal_kernels::cpu::uses_avx2());
    let seed = fresh_seed();
    let mut rng = Rng::new(seed);
    for case in selftest_grid(&mut rng, true) {
        for o in run_case(&case, rng.next_u64(), &Backend::ALL).unwrap() {
            assert!(
                o.pass && o.deterministic,
                "seed {seed}: {} [{}] on {}: {:?}",
                case.name,
                case.shape(),
                o.backend.name(),
                o.err
            );
        }
    }
}
