//! Our own engine as the teacher (`--teacher local:MODEL_DIR`): the chat is
//! flattened into a plain prompt and answered by greedy generation.

use super::chat::{ChatBackend, ChatError};
use crate::backend::cpu::Cpu;
use crate::data::record::Message;
use crate::generate::{generate, SamplingConfig};
use crate::model::Transformer;
use crate::tokenizer::Tokenizer;
use anyhow::{anyhow, Result};
use std::path::Path;

pub struct LocalChat {
    dir: String,
    model: Transformer<Cpu>,
    tokenizer: Tokenizer,
    max_new_tokens: usize,
}

impl LocalChat {
    /// Answers are at most `max_new_tokens` long, and at most half the
    /// model's context, so the question keeps the other half.
    pub fn load(dir: &Path, max_new_tokens: usize) -> Result<LocalChat> {
        let model = Transformer::load(&Cpu, dir)?;
        let max_new_tokens = max_new_tokens.min(model.cfg.max_position_embeddings / 2).max(1);
        Ok(LocalChat { dir: dir.display().to_string(), model, tokenizer: Tokenizer::load(dir)?, max_new_tokens })
    }
}

impl ChatBackend for LocalChat {
    fn name(&self) -> String {
        format!("local:{}", self.dir)
    }

    fn complete(&self, messages: &[Message]) -> Result<String, ChatError> {
        let mut text: String = messages.iter().map(|m| format!("{}:\n{}\n\n", m.role, m.content)).collect();
        text.push_str("assistant:\n");
        let fatal = |e: anyhow::Error| ChatError::Fatal(e);
        let mut ids = self.tokenizer.encode(&text).map_err(fatal)?.ids;
        // Keep the tail of long prompts within the model's context.
        let room = self.model.cfg.max_position_embeddings - self.max_new_tokens;
        if ids.len() > room {
            ids.drain(..ids.len() - room);
        }
        let cfg =
            SamplingConfig { max_new_tokens: self.max_new_tokens, stop_tokens: self.model.cfg.eos_token_ids.clone(), ..Default::default() };
        let out = generate(&Cpu, &self.model, &[ids], &cfg).map_err(fatal)?;
        let g = out.into_iter().next().ok_or_else(|| ChatError::Fatal(anyhow!("no generation")))?;
        self.tokenizer.decode(&g.tokens).map_err(fatal)
    }
}
