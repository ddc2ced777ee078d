//! How an instruction becomes model input. SFT, PPO rollouts and evaluation
//! share this, so a model is always asked the way it was trained.

use crate::tokenizer::Tokenizer;
use anyhow::{bail, Context, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PromptFormat {
    /// `### Instruction` / `### Response` headers (our own tiny models).
    Plain,
    /// `<|im_start|>user … <|im_end|>` then `<|im_start|>assistant` (Qwen, SmolLM2-Instruct).
    ChatMl,
}

impl PromptFormat {
    pub fn parse(name: &str) -> Result<PromptFormat> {
        Ok(match name {
            "plain" => PromptFormat::Plain,
            "chatml" => PromptFormat::ChatMl,
            other => bail!("prompt format must be plain or chatml, got {other:?}"),
        })
    }

    /// The text before the model's answer.
    pub fn instruction(self, prompt: &str) -> String {
        match self {
            PromptFormat::Plain => format!("### Instruction\n{prompt}\n### Response\n"),
            PromptFormat::ChatMl => format!("<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n"),
        }
    }

    /// The token that ends an answer: the end of text, or in ChatML the end
    /// of the assistant's turn, which chat models emit (and SFT teaches).
    pub fn answer_end(self, tok: &Tokenizer) -> Result<u32> {
        match self {
            PromptFormat::Plain => tok.eos_id(),
            PromptFormat::ChatMl => tok.token_id("<|im_end|>").context("the chatml prompt format needs <|im_end|> in the tokenizer"),
        }
    }

    /// Where sampling an answer stops: the answer's end and the model's own
    /// end-of-sequence tokens (its config.json `eos_token_id`). In the plain
    /// format a model that names its own ends needs no other (a tokenizer
    /// may spell its end of text in a way `eos_id` does not know).
    pub fn stop_tokens(self, tok: &Tokenizer, model_eos: &[u32]) -> Result<Vec<u32>> {
        let mut stops = model_eos.to_vec();
        match self.answer_end(tok) {
            Ok(end) if !stops.contains(&end) => stops.push(end),
            Ok(_) => {}
            Err(_) if self == PromptFormat::Plain && !stops.is_empty() => {}
            Err(e) => return Err(e),
        }
        Ok(stops)
    }
}
