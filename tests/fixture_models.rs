//! The CPU model against PyTorch/transformers fixtures (tools/make_fixtures.py):
//! logits, loss, every parameter gradient, two AdamW steps, and greedy decoding,
//! for a Llama (MHA, untied) and a Qwen2 (GQA, q/k/v bias, tied) model.

mod common;

use common::{assert_close, fixture_dir, Expected};
use vul2safe::backend::cpu::Cpu;
use vul2safe::generate::{generate, SamplingConfig};
use vul2safe::model::{param_specs, Batch, GradWrite, Params, TrainState, Transformer};
use vul2safe::train::{AdamWConfig, LrSchedule, ScheduleKind, Trainer, TrainerConfig};

const MODELS: [&str; 2] = ["llama_a", "qwen2_b"];

fn load(name: &str) -> (Transformer<Cpu>, Expected) {
    let m = Transformer::load(&Cpu, &fixture_dir(name)).expect("fixture model loads");
    (m, Expected::load(name))
}

/// The fixture's batch with HF's loss convention: mean over non-ignored labels.
fn batch(e: &Expected) -> Batch {
    let shape = e.shape("input_ids");
    let (b, t) = (shape[0], shape[1]);
    let ids: Vec<u32> = e.i64("input_ids").iter().map(|&x| x as u32).collect();
    let mask: Vec<bool> = e.i64("labels").iter().map(|&x| x != -100).collect();
    let counted = (0..b).flat_map(|r| (1..t).map(move |i| r * t + i)).filter(|&i| mask[i]).count();
    Batch::causal_lm(ids, &mask, b, t, counted as f32)
}

#[test]
fn logits_match_transformers() {
    for name in MODELS {
        let (m, e) = load(name);
        let b = batch(&e);
        let logits = m.forward_logits(&Cpu, &b.ids, b.batch, b.seq).unwrap();
        assert_close(&format!("{name} logits"), &logits, &e.f32("logits"), 1e-4, 1e-5);
    }
}

#[test]
fn loss_and_every_gradient_match_transformers() {
    for name in MODELS {
        let (m, e) = load(name);
        let b = batch(&e);
        let mut st = TrainState::new(&Cpu, &m.cfg, b.batch, b.seq);
        let mut grads = Params::build(&m.cfg, |s| vec![0.0; s.numel()]);
        let loss = m.forward_backward(&Cpu, &b, &mut st, &mut grads, GradWrite::Add).unwrap();
        let want = e.f32("loss")[0] as f64;
        assert!((loss - want).abs() <= 1e-5 * want.abs(), "{name}: loss {loss} vs {want}");
        for (spec, g) in grads.hf_tensors(&m.cfg) {
            assert_close(&format!("{name} grad {}", spec.name), g, &e.f32(&format!("grad.{}", spec.name)), 1e-4, 1e-5);
        }
    }
}

#[test]
fn recomputing_matmul_inputs_gives_the_same_loss_and_gradients() {
    for name in MODELS {
        let (m, e) = load(name);
        let b = batch(&e);
        let run = |mut st: TrainState<Cpu>| {
            let mut grads = Params::build(&m.cfg, |s| vec![0.0; s.numel()]);
            let loss = m.forward_backward(&Cpu, &b, &mut st, &mut grads, GradWrite::Add).unwrap();
            (loss, grads)
        };
        let (loss_kept, kept) = run(TrainState::new(&Cpu, &m.cfg, b.batch, b.seq));
        let (loss_redone, redone) = run(TrainState::recomputing(&Cpu, &m.cfg, b.batch, b.seq));
        // Same ops on the same inputs: the results are identical, not just close.
        assert_eq!(loss_kept, loss_redone, "{name} loss");
        for (spec, (a, r)) in param_specs(&m.cfg).iter().zip(kept.iter().into_iter().zip(redone.iter())) {
            assert_eq!(a, r, "{name} grad {}", spec.name);
        }
    }
}

/// A pass that overwrites the gradients leaves exactly what zeroing them and
/// adding would, whatever the buffers held (NaN here): on an untied model
/// and on a tied one with q/k/v biases.
#[test]
fn overwriting_gradients_equals_zeroing_then_adding() {
    for name in MODELS {
        let (m, e) = load(name);
        let b = batch(&e);
        let mut st = TrainState::new(&Cpu, &m.cfg, b.batch, b.seq);
        let mut added = Params::build(&m.cfg, |s| vec![0.0; s.numel()]);
        let loss_added = m.forward_backward(&Cpu, &b, &mut st, &mut added, GradWrite::Add).unwrap();
        let mut written = Params::build(&m.cfg, |s| vec![f32::NAN; s.numel()]);
        let loss_written = m.forward_backward(&Cpu, &b, &mut st, &mut written, GradWrite::Overwrite).unwrap();
        assert_eq!(loss_added, loss_written, "{name} loss");
        for (spec, (a, w)) in param_specs(&m.cfg).iter().zip(added.iter().into_iter().zip(written.iter())) {
            assert_eq!(a, w, "{name} grad {}", spec.name);
        }
    }
}

#[test]
fn gradient_accumulation_equals_one_big_batch() {
    let (m, e) = load("qwen2_b");
    let full = batch(&e);
    let mut st = TrainState::new(&Cpu, &m.cfg, full.batch, full.seq);
    let mut g_full = Params::build(&m.cfg, |s| vec![0.0; s.numel()]);
    let loss_full = m.forward_backward(&Cpu, &full, &mut st, &mut g_full, GradWrite::Add).unwrap();

    let mut st1 = TrainState::new(&Cpu, &m.cfg, 1, full.seq);
    let mut g_acc = Params::build(&m.cfg, |s| vec![0.0; s.numel()]);
    let mut loss_acc = 0.0;
    for r in 0..full.batch {
        let span = r * full.seq..(r + 1) * full.seq;
        let micro = Batch {
            batch: 1,
            seq: full.seq,
            ids: full.ids[span.clone()].to_vec(),
            targets: full.targets[span.clone()].to_vec(),
            weights: full.weights[span].to_vec(),
        };
        loss_acc += m.forward_backward(&Cpu, &micro, &mut st1, &mut g_acc, GradWrite::Add).unwrap();
    }
    assert!((loss_full - loss_acc).abs() < 1e-6 * loss_full.abs());
    for (a, b) in g_acc.iter().into_iter().zip(g_full.iter()) {
        assert_close("accumulated grad", a, b, 1e-5, 1e-6);
    }
}

/// The LM head in several chunks, the last one shorter, gives what it gives
/// in one: on the CPU a chunk holds 8 Mi logits, 25,343 rows at this vocab
/// of 331, so 797 rows of 64 tokens take three chunks (17,003 rows, twice,
/// then 17,002), and micro-batches of at most 200 rows one each.
#[test]
fn lm_head_in_chunks_matches_single_chunk_micro_batches() {
    let (m, _) = load("qwen2_b");
    assert_eq!(m.cfg.vocab_size, 331, "the chunk counts above assume this vocab");
    let (rows, seq) = (797, 64);
    let n = rows * seq;
    let ids: Vec<u32> = (0..n).map(|i| ((i * 7919 + 13) % 331) as u32).collect();
    let full = Batch::causal_lm(ids, &vec![true; n], rows, seq, n as f32);
    let mut g_full = Params::build(&m.cfg, |s| vec![0.0; s.numel()]);
    let loss_full = m.forward_backward(&Cpu, &full, &mut TrainState::new(&Cpu, &m.cfg, rows, seq), &mut g_full, GradWrite::Add).unwrap();
    let mut g_acc = Params::build(&m.cfg, |s| vec![0.0; s.numel()]);
    let mut loss_acc = 0.0;
    for r0 in (0..rows).step_by(200) {
        let b = 200.min(rows - r0);
        let span = r0 * seq..(r0 + b) * seq;
        let micro = Batch {
            batch: b,
            seq,
            ids: full.ids[span.clone()].to_vec(),
            targets: full.targets[span.clone()].to_vec(),
            weights: full.weights[span].to_vec(),
        };
        loss_acc += m.forward_backward(&Cpu, &micro, &mut TrainState::new(&Cpu, &m.cfg, b, seq), &mut g_acc, GradWrite::Add).unwrap();
    }
    assert!((loss_full - loss_acc).abs() < 1e-5 * loss_full.abs(), "{loss_full} vs {loss_acc}");
    for (spec, (a, b)) in param_specs(&m.cfg).iter().zip(g_acc.iter().into_iter().zip(g_full.iter())) {
        assert_close(&format!("grad {}", spec.name), a, b, 1e-4, 1e-6);
    }
}

#[test]
fn two_adamw_steps_match_torch() {
    for name in MODELS {
        let (m, e) = load(name);
        let hp: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixture_dir(name).join("adamw.json")).unwrap()).unwrap();
        let f = |k: &str| hp[k].as_f64().unwrap() as f32;
        let opt = AdamWConfig {
            beta1: hp["betas"][0].as_f64().unwrap() as f32,
            beta2: hp["betas"][1].as_f64().unwrap() as f32,
            eps: f("eps"),
            weight_decay: f("weight_decay"),
        };
        let lr = f("lr");
        let sched = LrSchedule { kind: ScheduleKind::Constant, peak: lr, min: lr, warmup_steps: 0, total_steps: 2 };
        let b = batch(&e);
        let cfg = m.cfg.clone();
        let mut tr = Trainer::new(
            &Cpu,
            m,
            TrainerConfig { batch: b.batch, seq: b.seq, opt, schedule: sched, max_grad_norm: f("max_grad_norm"), recompute: false },
        );
        for _ in 0..2 {
            tr.step(&Cpu, std::slice::from_ref(&b)).unwrap();
        }
        let params = tr.model.to_host(&Cpu);
        for (spec, p) in params.hf_tensors(&cfg) {
            // Adam's update direction amplifies tiny gradient differences where
            // v is small, so parameters get a slightly wider band than grads.
            // Adam's normalized direction amplifies f32 rounding of the step-2
            // gradients: torch's own f32 run differs from its f64 run by up to
            // 2e-3 of a tensor's scale here, so this band is 3e-3 of the scale.
            // The optimizer math itself is checked tightly in `adamw_update_matches_torch`.
            assert_close(&format!("{name} step2 {}", spec.name), p, &e.f32(&format!("step2.{}", spec.name)), 0.0, 3e-3);
        }
    }
}

#[test]
fn adamw_update_matches_torch() {
    use vul2safe::backend::{AdamWStep, Backend};
    let e = Expected::file("adamw_unit.safetensors");
    let hp: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixture_dir("llama_a/adamw.json")).unwrap()).unwrap();
    let f = |v: &serde_json::Value| v.as_f64().unwrap() as f32;
    let mut p = e.f32("p0");
    let (mut m, mut v) = (vec![0.0; p.len()], vec![0.0; p.len()]);
    for (step, g) in [e.f32("g1"), e.f32("g2")].iter().enumerate() {
        let hp = AdamWStep {
            lr: f(&hp["lr"]),
            beta1: f(&hp["betas"][0]),
            beta2: f(&hp["betas"][1]),
            eps: f(&hp["eps"]),
            weight_decay: f(&hp["weight_decay"]),
            step: step as u64 + 1,
            grad_scale: 1.0,
        };
        Cpu.adamw(&mut p, g, &mut m, &mut v, hp);
    }
    assert_close("adamw p2", &p, &e.f32("p2"), 1e-6, 1e-6);
}

#[test]
fn greedy_generation_matches_transformers() {
    for name in MODELS {
        let (m, e) = load(name);
        let prompt: Vec<u32> = e.i64("greedy_prompt").iter().map(|&x| x as u32).collect();
        let want: Vec<u32> = e.i64("greedy_tokens").iter().map(|&x| x as u32).collect();
        let cfg = SamplingConfig { max_new_tokens: want.len(), ..Default::default() };
        let got = generate(&Cpu, &m, &[prompt], &cfg).unwrap().remove(0);
        assert_eq!(got.tokens, want, "{name}");
    }
}
