//! `tokenizer.json` through the `tokenizers` crate, with byte offsets so that
//! PrimeVul+ byte spans map onto token indices.

use anyhow::{anyhow, Context, Result};
use std::path::Path;

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
}

/// Token ids and, for each, its `[start, end)` byte range in the input text.
pub struct Encoding {
    pub ids: Vec<u32>,
    pub offsets: Vec<(usize, usize)>,
}

impl Tokenizer {
    pub fn load(dir_or_file: &Path) -> Result<Tokenizer> {
        Ok(Tokenizer::load_with_json(dir_or_file)?.0)
    }

    /// The tokenizer and its tokenizer.json bytes (to copy into checkpoints).
    pub fn load_with_json(dir_or_file: &Path) -> Result<(Tokenizer, Vec<u8>)> {
        let path = if dir_or_file.is_dir() { dir_or_file.join("tokenizer.json") } else { dir_or_file.to_path_buf() };
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        Ok((Tokenizer::from_bytes(&bytes, &path.display().to_string())?, bytes))
    }

    /// Parses tokenizer.json text; `source` names it in errors.
    pub fn from_bytes(bytes: &[u8], source: &str) -> Result<Tokenizer> {
        let inner = tokenizers::Tokenizer::from_bytes(bytes).map_err(|e| anyhow!("{source}: malformed tokenizer.json: {e}"))?;
        Ok(Tokenizer { inner })
    }

    /// Encodes without adding special tokens (prompts add their own).
    pub fn encode(&self, text: &str) -> Result<Encoding> {
        let enc = self.inner.encode(text, false).map_err(|e| anyhow!("tokenizing failed: {e}"))?;
        Ok(Encoding { ids: enc.get_ids().to_vec(), offsets: enc.get_offsets().to_vec() })
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, true).map_err(|e| anyhow!("detokenizing failed: {e}"))
    }

    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The end-of-text token: `<|endoftext|>`, `<|im_end|>` or `</s>`.
    pub fn eos_id(&self) -> Result<u32> {
        ["<|endoftext|>", "<|im_end|>", "</s>"].iter().find_map(|t| self.token_id(t)).context("the tokenizer has no end-of-text token")
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}

/// Trains a byte-level BPE tokenizer (as GPT-2 and Llama 3 use) on `texts`,
/// with `<|endoftext|>` as its one special token. Returns the tokenizer and
/// its tokenizer.json text.
pub fn train_bpe<'a>(texts: impl Iterator<Item = &'a str> + Send, vocab_size: usize) -> Result<(Tokenizer, String)> {
    use tokenizers::decoders::DecoderWrapper;
    use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
    use tokenizers::normalizers::NormalizerWrapper;
    use tokenizers::pre_tokenizers::byte_level::ByteLevel;
    use tokenizers::pre_tokenizers::PreTokenizerWrapper;
    use tokenizers::processors::PostProcessorWrapper;
    use tokenizers::{AddedToken, TokenizerBuilder};
    let byte_level = ByteLevel::new(false, true, true);
    let mut tok = TokenizerBuilder::<BPE, NormalizerWrapper, PreTokenizerWrapper, PostProcessorWrapper, DecoderWrapper>::new()
        .with_model(BPE::default())
        .with_pre_tokenizer(Some(byte_level.into()))
        .with_decoder(Some(byte_level.into()))
        .build()
        .map_err(|e| anyhow!("building a tokenizer: {e}"))?;
    let mut trainer = BpeTrainerBuilder::new()
        .show_progress(false)
        .vocab_size(vocab_size)
        .min_frequency(2)
        .special_tokens(vec![AddedToken::from("<|endoftext|>", true)])
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build();
    tok.train(&mut trainer, texts).map_err(|e| anyhow!("training the tokenizer: {e}"))?;
    let json = tok.to_string(false).map_err(|e| anyhow!("serializing the tokenizer: {e}"))?;
    Ok((Tokenizer::from_bytes(json.as_bytes(), "trained tokenizer")?, json))
}
