//! An OpenAI-compatible `/v1/chat/completions` client (blocking, with a
//! per-request timeout). The API key comes from an environment variable.

use super::chat::{ChatBackend, ChatError};
use crate::data::record::Message;
use anyhow::anyhow;
use serde_json::{json, Value};
use std::time::Duration;

pub struct HttpChat {
    pub url: String,
    pub model: String,
    api_key: Option<String>,
    agent: ureq::Agent,
}

impl HttpChat {
    /// `base` is the server root or the full `/v1/chat/completions` URL.
    pub fn new(base: &str, model: &str, api_key: Option<String>, timeout: Duration) -> HttpChat {
        let base = base.trim_end_matches('/');
        let url = if base.ends_with("/chat/completions") { base.to_string() } else { format!("{base}/v1/chat/completions") };
        let agent = ureq::Agent::config_builder().timeout_global(Some(timeout)).http_status_as_error(false).build().into();
        HttpChat { url, model: model.to_string(), api_key, agent }
    }
}

impl ChatBackend for HttpChat {
    fn name(&self) -> String {
        self.model.clone()
    }

    fn complete(&self, messages: &[Message]) -> Result<String, ChatError> {
        let body = json!({"model": self.model, "messages": messages, "temperature": 0.0});
        let mut req = self.agent.post(&self.url);
        if let Some(key) = &self.api_key {
            req = req.header("Authorization", &format!("Bearer {key}"));
        }
        let mut resp = req.send_json(&body).map_err(|e| ChatError::Transient(anyhow!("{}: {e}", self.url)))?;
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().map_err(|e| ChatError::Transient(anyhow!("{}: reading the reply: {e}", self.url)))?;
        match status {
            200..=299 => {}
            429 | 500..=599 => return Err(ChatError::Transient(anyhow!("{}: HTTP {status}", self.url))),
            _ => return Err(ChatError::Fatal(anyhow!("{}: HTTP {status}: {}", self.url, text.chars().take(200).collect::<String>()))),
        }
        let v: Value = serde_json::from_str(&text).map_err(|e| ChatError::Transient(anyhow!("{}: reply is not JSON: {e}", self.url)))?;
        v["choices"][0]["message"]["content"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| ChatError::Transient(anyhow!("{}: reply has no choices[0].message.content", self.url)))
    }
}
