//! Generation: the KV-cache path against a no-cache full forward, batching of
//! prompts of different lengths, seeded sampling, stop tokens and logprobs.

mod common;

use common::fixture_dir;
use rand::{Rng, SeedableRng};
use vul2safe::backend::cpu::Cpu;
use vul2safe::generate::{generate, generate_continuous, sample_row, Generation, SamplingConfig};
use vul2safe::model::{KvCache, Transformer};

fn model(name: &str) -> Transformer<Cpu> {
    Transformer::load(&Cpu, &fixture_dir(name)).unwrap()
}

/// Greedy decoding by re-running the whole sequence each step, no cache.
fn greedy_no_cache(m: &Transformer<Cpu>, prompt: &[u32], n: usize) -> Vec<u32> {
    let v = m.cfg.vocab_size;
    let mut seq = prompt.to_vec();
    for _ in 0..n {
        let logits = m.forward_logits(&Cpu, &seq, 1, seq.len()).unwrap();
        let last = &logits[(seq.len() - 1) * v..];
        let best = last.iter().enumerate().fold(0, |b, (i, &x)| if x > last[b] { i } else { b });
        seq.push(best as u32);
    }
    seq[prompt.len()..].to_vec()
}

#[test]
fn batched_kv_cache_greedy_matches_full_forward() {
    for name in ["llama_a", "qwen2_b"] {
        let m = model(name);
        let prompts: Vec<Vec<u32>> = vec![vec![5, 17, 200, 3], vec![9], vec![300, 1, 2, 3, 4, 5, 6, 7, 8, 250, 11]];
        let cfg = SamplingConfig { max_new_tokens: 16, ..Default::default() };
        let got = generate(&Cpu, &m, &prompts, &cfg).unwrap();
        for (p, g) in prompts.iter().zip(&got) {
            assert_eq!(g.tokens, greedy_no_cache(&m, p, 16), "{name} prompt {p:?}");
        }
    }
}

#[test]
fn packed_prefill_matches_each_prompt_prefilled_alone() {
    for name in ["llama_a", "qwen2_b"] {
        let m = model(name);
        let (d, cap) = (m.cfg.hidden_size, 12);
        let prompts: [&[u32]; 3] = [&[5, 17, 200, 3], &[9], &[300, 1, 2, 3, 4, 5, 6]];
        // Rows out of order; row 1 keeps what it held.
        let rows = [2, 0, 3];
        let mut cache = KvCache::new(&Cpu, &m.cfg, 4, cap);
        cache.lens = vec![3, 5, 11, 0];
        let hidden = m.prefill_packed(&Cpu, &prompts, &rows, &mut cache).unwrap();
        assert_eq!(cache.lens, [1, 5, 4, 7], "{name}: lengths after the prefill");
        let mut start = 0;
        for (p, &row) in prompts.iter().zip(&rows) {
            let mut alone = KvCache::new(&Cpu, &m.cfg, 1, cap);
            let want = m.forward_cached(&Cpu, p, p.len(), &mut alone).unwrap();
            let got = &hidden[start * d..(start + p.len()) * d];
            // The same sums, up to the matmuls' blocking of a different row count.
            let close = |a: &[f32], b: &[f32]| a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 1e-5 * (1.0 + y.abs()));
            assert!(close(got, &want), "{name}: hidden states of {p:?}");
            // Its keys and values in its row, at positions 0..len of every head.
            let plane = cap * m.cfg.head_dim;
            for (packed, single) in cache.k.iter().zip(&alone.k).chain(cache.v.iter().zip(&alone.v)) {
                for h in 0..m.cfg.num_kv_heads {
                    let at = |buf: &Vec<f32>, r: usize| buf[(r * m.cfg.num_kv_heads + h) * plane..][..p.len() * m.cfg.head_dim].to_vec();
                    assert!(close(&at(packed, row), &at(single, 0)), "{name}: cache row {row}, kv head {h}");
                }
            }
            start += p.len();
        }
    }
}

#[test]
fn packed_prefill_refuses_bad_rows_and_prompts_with_clear_errors() {
    let m = model("llama_a");
    let mut cache = KvCache::new(&Cpu, &m.cfg, 2, 8);
    type Case<'a> = (&'a [&'a [u32]], &'a [usize], &'a str);
    let cases: [Case; 5] = [
        (&[&[1, 2], &[3]], &[1, 1], "cache row 1 is prefilled twice"),
        (&[&[1, 2]], &[2], "cache row 2 is past the cache's 2 rows"),
        (&[&[1, 2]], &[0, 1], "1 prompts for 2 cache rows"),
        (&[&[]], &[0], "every prompt needs at least one token"),
        (&[&[1; 9]], &[0], "exceeds the KV cache capacity 8"),
    ];
    for (prompts, rows, want) in cases {
        let Err(err) = m.prefill_packed(&Cpu, prompts, rows, &mut cache) else { panic!("{prompts:?} into rows {rows:?} was accepted") };
        assert!(format!("{err:#}").contains(want), "{prompts:?} into rows {rows:?}: {err:#}");
    }
}

#[test]
fn logprobs_match_a_full_forward_of_the_sample() {
    let m = model("qwen2_b");
    let prompt = vec![4u32, 8, 15, 16, 23, 42];
    let cfg = SamplingConfig { max_new_tokens: 10, temperature: 1.0, seed: 7, ..Default::default() };
    let g = generate(&Cpu, &m, std::slice::from_ref(&prompt), &cfg).unwrap().remove(0);
    let full: Vec<u32> = prompt.iter().chain(&g.tokens).copied().collect();
    let scored = m.score(&Cpu, &[full], 1.0).unwrap().remove(0);
    let tail = &scored[prompt.len() - 1..];
    for (a, b) in g.logprobs.iter().zip(tail) {
        assert!((a - b).abs() < 1e-4, "sampled logprob {a} vs scored {b}");
    }
}

#[test]
fn sampling_is_seeded_and_seeds_differ() {
    let m = model("llama_a");
    let run = |seed| {
        let cfg = SamplingConfig { max_new_tokens: 20, temperature: 1.5, seed, ..Default::default() };
        generate(&Cpu, &m, &[vec![1, 2, 3]], &cfg).unwrap().remove(0).tokens
    };
    assert_eq!(run(1), run(1));
    assert_ne!(run(1), run(2));
}

#[test]
fn stop_tokens_end_a_row_and_other_rows_continue() {
    let m = model("llama_a");
    let prompts = vec![vec![1u32, 2, 3], vec![40, 41]];
    let free = generate(&Cpu, &m, &prompts, &SamplingConfig { max_new_tokens: 12, ..Default::default() }).unwrap();
    let stop = free[0].tokens[2];
    let cfg = SamplingConfig { max_new_tokens: 12, stop_tokens: vec![stop], ..Default::default() };
    let got = generate(&Cpu, &m, &prompts, &cfg).unwrap();
    let first_stop = free[0].tokens.iter().position(|&t| t == stop).unwrap();
    assert_eq!(got[0].tokens, free[0].tokens[..=first_stop]);
    assert!(got[0].stopped);
    let other_stop = free[1].tokens.iter().position(|&t| t == stop).map_or(12, |i| i + 1);
    assert_eq!(got[1].tokens, free[1].tokens[..other_stop]);
}

#[test]
fn continuous_batching_refills_finished_rows_and_matches_one_prompt_at_a_time() {
    let m = model("qwen2_b");
    let prompts: Vec<Vec<u32>> = vec![vec![1, 2, 3], vec![40, 41], vec![7], vec![300, 301, 302, 303, 304], vec![12, 99], vec![5, 5, 5, 5]];
    // Stopping on a token the first prompt emits early makes rows finish at different steps.
    let alone = |p: &Vec<u32>, cfg: &SamplingConfig| generate(&Cpu, &m, std::slice::from_ref(p), cfg).unwrap().remove(0);
    let free = alone(&prompts[0], &SamplingConfig { max_new_tokens: 14, ..Default::default() });
    let cfg = SamplingConfig { max_new_tokens: 14, stop_tokens: vec![free.tokens[2]], ..Default::default() };
    let want: Vec<_> = prompts.iter().map(|p| alone(p, &cfg)).collect();
    assert!(want.iter().any(|g| g.stopped) && want.iter().any(|g| !g.stopped), "the stop token should end only some rows");
    for slots in [1, 2, 4] {
        assert_same_generations(&generate_continuous(&Cpu, &m, &prompts, slots, &cfg).unwrap(), &want, slots);
    }
}

/// Same tokens, stop flags and (to 1e-5) logprobs, prompt by prompt.
fn assert_same_generations(got: &[Generation], want: &[Generation], slots: usize) {
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.tokens, w.tokens, "{slots} slots, prompt {i}");
        assert_eq!(g.stopped, w.stopped, "{slots} slots, prompt {i}");
        for (a, b) in g.logprobs.iter().zip(&w.logprobs) {
            assert!((a - b).abs() < 1e-5, "{slots} slots, prompt {i}: logprob {a} vs {b}");
        }
    }
}

#[test]
fn rows_refilled_in_the_same_step_are_prefilled_together() {
    let m = model("llama_a");
    // Equal lengths and no stop token: every row finishes in the same step and
    // all are refilled at once (prefilled in place); with 4 slots, 2 rows are.
    let prompts: Vec<Vec<u32>> = (0..6).map(|i| vec![10 + i, 20 + i, 30 + i]).collect();
    let cfg = SamplingConfig { max_new_tokens: 6, temperature: 1.0, seed: 5, ..Default::default() };
    let all = generate(&Cpu, &m, &prompts, &cfg).unwrap();
    for slots in [2, 3, 4] {
        assert_same_generations(&generate_continuous(&Cpu, &m, &prompts, slots, &cfg).unwrap(), &all, slots);
    }
}

#[test]
fn a_prompts_sample_does_not_depend_on_the_batch_it_runs_in() {
    let m = model("llama_a");
    let prompts: Vec<Vec<u32>> = vec![vec![1, 2, 3], vec![40, 41], vec![7], vec![300, 301, 302]];
    let cfg = SamplingConfig { max_new_tokens: 12, temperature: 1.2, top_p: 0.9, seed: 11, ..Default::default() };
    let all = generate(&Cpu, &m, &prompts, &cfg).unwrap();
    for slots in [1, 3] {
        let got = generate_continuous(&Cpu, &m, &prompts, slots, &cfg).unwrap();
        assert_eq!(got.iter().map(|g| &g.tokens).collect::<Vec<_>>(), all.iter().map(|g| &g.tokens).collect::<Vec<_>>(), "{slots} slots");
    }
    // Each prompt has its own stream: the same prompt twice samples two different continuations.
    let twice = generate(&Cpu, &m, &[vec![1, 2, 3], vec![1, 2, 3]], &cfg).unwrap();
    assert_eq!(twice[0].tokens, all[0].tokens);
    assert_ne!(twice[0].tokens, twice[1].tokens);
}

#[test]
fn top_k_and_top_p_restrict_the_choice() {
    let logits = [2.0f32, 1.0, 0.5, 0.0, -1.0];
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let k1 = SamplingConfig { temperature: 1.0, top_k: 1, ..Default::default() };
    let p_small = SamplingConfig { temperature: 1.0, top_p: 0.3, ..Default::default() };
    let k2 = SamplingConfig { temperature: 1.0, top_k: 2, ..Default::default() };
    let mut seen_k2 = [false; 5];
    for _ in 0..200 {
        assert_eq!(sample_row(&logits, &k1, rng.random()).0, 0);
        assert_eq!(sample_row(&logits, &p_small, rng.random()).0, 0);
        seen_k2[sample_row(&logits, &k2, rng.random()).0 as usize] = true;
    }
    assert_eq!(seen_k2, [true, true, false, false, false]);
    // The logprob is of the untruncated, temperature-scaled distribution.
    let (tok, lp) = sample_row(&logits, &k1, rng.random());
    let z: f32 = logits.iter().map(|x| x.exp()).sum::<f32>().ln();
    assert_eq!(tok, 0);
    assert!((lp - (2.0 - z)).abs() < 1e-6);
}

/// The draw walks the kept tokens in id order: sweeping `u` over [0, 1)
/// visits them by ascending id, each for a share of draws equal to its
/// probability renormalized over the kept tokens (scaled by the temperature).
#[test]
fn draws_sweep_the_kept_tokens_in_id_order_by_probability() {
    let logits = [0.5f32, 2.0, -1.0, 1.0, 0.0, 1.0];
    let cases = [
        (SamplingConfig { temperature: 1.0, ..Default::default() }, vec![0, 1, 2, 3, 4, 5]),
        (SamplingConfig { temperature: 0.7, ..Default::default() }, vec![0, 1, 2, 3, 4, 5]),
        // The top 3 by logit, the tie at 1.0 broken by id.
        (SamplingConfig { temperature: 1.0, top_k: 3, ..Default::default() }, vec![1, 3, 5]),
        // The shortest descending prefix reaching 0.6: ids 1 and 3.
        (SamplingConfig { temperature: 1.0, top_p: 0.6, ..Default::default() }, vec![1, 3]),
    ];
    let steps = 100_000;
    for (cfg, kept) in cases {
        let p: Vec<f64> = kept.iter().map(|&i| (logits[i] as f64 / cfg.temperature as f64).exp()).collect();
        let total: f64 = p.iter().sum();
        let mut visits: Vec<(u32, usize)> = Vec::new();
        for s in 0..steps {
            let tok = sample_row(&logits, &cfg, s as f32 / steps as f32).0;
            match visits.last_mut() {
                Some((t, n)) if *t == tok => *n += 1,
                _ => visits.push((tok, 1)),
            }
        }
        let order: Vec<usize> = visits.iter().map(|&(t, _)| t as usize).collect();
        assert_eq!(order, kept, "{cfg:?}: tokens in sweep order");
        for ((_, n), p) in visits.iter().zip(&p) {
            let share = *n as f64 / steps as f64;
            assert!((share - p / total).abs() < 1e-3, "{cfg:?}: share {share}, want {}", p / total);
        }
    }
}

#[test]
fn out_of_vocab_prompt_is_an_error_not_a_panic() {
    let m = model("llama_a");
    let err = generate(&Cpu, &m, &[vec![1, 5000]], &SamplingConfig::default()).unwrap_err();
    assert!(format!("{err:#}").contains("token id 5000"), "{err:#}");
    let err = m.score(&Cpu, &[vec![1, 2, 331]], 1.0).unwrap_err();
    assert!(format!("{err:#}").contains("out of range for vocab size 331"), "{err:#}");
}
