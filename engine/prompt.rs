//! How an instruction becomes model input. SFT, PPO rollouts and evaluation
//! share this, so a model is always asked the way it was trained.

use anyhow::{bail, Result};

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
}
