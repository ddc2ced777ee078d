//! A real HTTP server on 127.0.0.1 that plays an OpenAI-compatible teacher,
//! scripted per request to answer, fail, send garbage or stall.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

pub enum Reply {
    /// 200 with this assistant message content.
    Content(String),
    Status(u16),
    /// 200 with this raw body.
    Raw(String),
    /// Wait this long, then answer with the inner reply.
    Stall(Duration, Box<Reply>),
}

pub type Script = dyn Fn(usize, &str) -> Reply + Send + Sync;

pub struct TeacherServer {
    pub url: String,
    /// Every request body, in arrival order.
    pub bodies: Arc<Mutex<Vec<String>>>,
    server: Arc<tiny_http::Server>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

fn completion(content: &str) -> String {
    serde_json::json!({"id": "x", "object": "chat.completion", "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}]}).to_string()
}

fn respond(req: tiny_http::Request, reply: Reply) {
    let _ = match reply {
        Reply::Content(c) => req.respond(tiny_http::Response::from_string(completion(&c))),
        Reply::Raw(body) => req.respond(tiny_http::Response::from_string(body)),
        Reply::Status(code) => req.respond(tiny_http::Response::from_string("error").with_status_code(code)),
        Reply::Stall(d, then) => {
            std::thread::sleep(d);
            respond(req, *then);
            return;
        }
    };
}

impl TeacherServer {
    pub fn start(script: impl Fn(usize, &str) -> Reply + Send + Sync + 'static) -> TeacherServer {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").expect("bind 127.0.0.1"));
        let url = format!("http://{}", server.server_addr().to_ip().expect("ip address"));
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let script: Arc<Script> = Arc::new(script);
        let (srv, b, st) = (server.clone(), bodies.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::SeqCst) {
                let Ok(Some(mut req)) = srv.recv_timeout(Duration::from_millis(50)) else { continue };
                let mut body = String::new();
                let _ = req.as_reader().read_to_string(&mut body);
                let n = {
                    let mut all = b.lock().unwrap();
                    all.push(body.clone());
                    all.len() - 1
                };
                let script = script.clone();
                // One thread per request, so a stalled answer does not block others.
                std::thread::spawn(move || respond(req, script(n, &body)));
            }
        });
        TeacherServer { url, bodies, server, stop, thread: Some(thread) }
    }

    pub fn requests(&self) -> Vec<String> {
        self.bodies.lock().unwrap().clone()
    }
}

impl Drop for TeacherServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Whether a request asks for prompts (else it asks for a reflection).
pub fn is_prompt_request(body: &str) -> bool {
    body.contains("task descriptions")
}

/// A well-behaved teacher's answer to any request.
pub fn good_answer(body: &str) -> Reply {
    if is_prompt_request(body) {
        Reply::Content(r#"{"prompts": ["Write the function described above for the service.", "Implement this helper with the given signature.", "Mention security here."]}"#.into())
    } else {
        Reply::Content(r#"Sure. {"verdict": "security_fix", "confidence": 0.9, "vulnerable_lines": [3], "secure_tokens": ["snprintf"], "rationale": "bounded"}"#.into())
    }
}
