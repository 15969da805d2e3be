//! [`TextStream`]: the text of a growing list of generated tokens, kept up to date by decoding only
//! the last few tokens at each step.
//!
//! Decoding the whole list at every token (what stop strings and streaming did until the tenth
//! session) costs O(n) per token, O(n^2) per request. A token's text is not simply appended to the
//! text before it, though: a UTF-8 character may be split over byte tokens, and SentencePiece
//! strips the leading space of the whole text. So, as Hugging Face's and vLLM's incremental
//! detokenizers do, the new text is the difference between the decodes of two short windows that
//! start at the same token, `ids[prefix..read]` (already emitted) and `ids[prefix..]`; it is held
//! back while it ends in an incomplete character (U+FFFD).

use crate::{Result, Tokenizer};

/// Settled text of a token list that only grows. See the module docs.
#[derive(Clone, Debug, Default)]
pub struct TextStream {
    text: String,
    /// First token of the context window, whose text is already part of `text`.
    prefix: usize,
    /// Tokens whose text is in `text`.
    read: usize,
}

impl TextStream {
    pub fn new() -> Self {
        Self::default()
    }

    /// The text of the tokens settled so far (an incomplete character at the end is held back).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Takes in `ids[self.read..]` (`ids` is every token so far, the ones seen before unchanged)
    /// and returns the byte offset in [`Self::text`] where the new text starts, or `None` when
    /// nothing new is settled yet. Fails, naming the argument, on an id outside the vocabulary.
    pub fn update(&mut self, tok: &Tokenizer, ids: &[u32], skip_special: bool) -> Result<Option<usize>> {
        if ids.len() <= self.read {
            return Ok(None);
        }
        // Where the window may start:
        // - not inside a run of byte pieces (`<0xE2>`): SentencePiece's byte fallback decodes a
        //   run as a whole, and an invalid run becomes one U+FFFD per byte. Skipped special
        //   tokens vanish before the byte fallback runs, so they count as part of a run;
        // - with text: when every token of `prefix..read` decodes to nothing (skipped special
        //   tokens), a leading space of the first new token would be stripped as if it began the
        //   whole text. So the window widens back until it has some.
        let is_byte = |id: u32| tok.token_text(id).is_some_and(|t| t.len() == 6 && t.starts_with("<0x"));
        let in_run = |id: u32| is_byte(id) || (skip_special && tok.decode(&[id], true).is_ok_and(|t| t.is_empty()));
        let before = loop {
            while self.prefix > 0 && in_run(ids[self.prefix - 1]) && in_run(ids[self.prefix]) {
                self.prefix -= 1;
            }
            let before = tok.decode(&ids[self.prefix..self.read], skip_special)?;
            if !before.is_empty() || self.prefix == 0 {
                break before;
            }
            self.prefix = self.prefix.saturating_sub(4);
        };
        let after = tok.decode(&ids[self.prefix..], skip_special)?;
        if !after.starts_with(&before) {
            return self.resync(tok, ids, skip_special);
        }
        if after.len() == before.len() || after.ends_with('\u{FFFD}') {
            return Ok(None);
        }
        let at = self.text.len();
        self.text.push_str(&after[before.len()..]);
        self.prefix = self.read;
        self.read = ids.len();
        Ok(Some(at))
    }

    /// The windows disagree (rare: a byte-fallback run that turns invalid, which the byte-run
    /// rule above keeps inside the window, or a decoder that is not prefix-stable): decode
    /// everything, once, and report the new text from where it first differs from the old.
    fn resync(&mut self, tok: &Tokenizer, ids: &[u32], skip_special: bool) -> Result<Option<usize>> {
        let full = tok.decode(ids, skip_special)?;
        if full.ends_with('\u{FFFD}') {
            return Ok(None);
        }
        let mut at = self.text.bytes().zip(full.bytes()).take_while(|(a, b)| a == b).count();
        while !full.is_char_boundary(at) {
            at -= 1;
        }
        self.text = full;
        // The next update widens the window back from here until it has text.
        (self.prefix, self.read) = (ids.len(), ids.len());
        Ok(Some(at))
    }
}
