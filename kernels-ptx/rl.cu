// The RL reductions, twins of engine/rl/ on the CPU: per-token reward
// assembly, the segmented per-sequence sum (the sequence-penalty reduction),
// the GAE reverse scan, and the per-token PPO policy and value losses with
// their gradients. Sequences are packed back to back; starts[s]..starts[s+1]
// are the tokens of sequence s.
#include "common.cuh"

// out[s] = sum of values over sequence s (one block per sequence, in-order per thread then tree).
extern "C" __global__ void rl_segment_sum(float *out, const float *values, const int *starts) {
    int s = blockIdx.x;
    float acc = 0.0f;
    for (int i = starts[s] + threadIdx.x; i < starts[s + 1]; i += blockDim.x) acc += values[i];
    acc = block_sum(acc);
    if (threadIdx.x == 0) out[s] = acc;
}

// inst[i] = -kl_coef * kl[i]; tok[i] = bonus + penalty (TLR) or 0 (instance);
// the last token of each sequence adds the instance score (and, in instance
// mode, the sequence's token total).
extern "C" __global__ void rl_assemble(float *inst, float *tok, const float *kl, const float *bonus, const float *penalty,
                                       const float *instance, const float *token_total, const int *starts, int nseq, float kl_coef,
                                       int tlr) {
    int s = blockIdx.x;
    if (s >= nseq) return;
    int a = starts[s], b = starts[s + 1];
    for (int i = a + threadIdx.x; i < b; i += blockDim.x) {
        inst[i] = -kl_coef * kl[i];
        tok[i] = tlr ? bonus[i] + penalty[i] : 0.0f;
    }
    __syncthreads();
    if (threadIdx.x == 0 && b > a) inst[b - 1] += instance[s] + (tlr ? 0.0f : token_total[s]);
}

// GAE per sequence (value after the last token is 0), one thread per sequence.
extern "C" __global__ void rl_gae(float *adv, float *ret, const float *rewards, const float *values, const int *starts, int nseq, float gamma,
                                  float lambda) {
    int s = blockIdx.x * blockDim.x + threadIdx.x;
    if (s >= nseq) return;
    float next_adv = 0.0f, next_v = 0.0f;
    for (int t = starts[s + 1] - 1; t >= starts[s]; t--) {
        float delta = rewards[t] + gamma * next_v - values[t];
        next_adv = delta + gamma * lambda * next_adv;
        adv[t] = next_adv;
        ret[t] = next_adv + values[t];
        next_v = values[t];
    }
}

// -A * clip-surrogate and its derivative in logp; returns whether clipping bit.
__device__ __forceinline__ int surrogate(float ratio, float adv, float eps, float *loss, float *grad) {
    float unclipped = -adv * ratio;
    float clipped = -adv * fminf(fmaxf(ratio, 1.0f - eps), 1.0f + eps);
    if (unclipped >= clipped) {
        *loss = unclipped;
        *grad = -adv * ratio;
        return 0;
    }
    *loss = clipped;
    *grad = 0.0f;
    return 1;
}

// mode: 0 standard, 1 dual (param = c), 2 token-aware (param = eps_tok), 3 decoupled (param = eps_tok).
extern "C" __global__ void rl_policy_loss(float *loss, float *dlogp, int *clipped, const float *logp, const float *logp_old, const float *adv,
                                          const float *adv_tok, const unsigned char *has_tok, long n, float eps, int mode, float param) {
    FOR_EACH(i, n) {
        float ratio = __expf(logp[i] - logp_old[i]);
        float l, g;
        int c;
        if (mode == 2) {
            c = surrogate(ratio, adv[i], has_tok[i] ? param : eps, &l, &g);
        } else if (mode == 3) {
            float l2, g2;
            c = surrogate(ratio, adv[i] - adv_tok[i], eps, &l, &g);
            c |= surrogate(ratio, adv_tok[i], param, &l2, &g2);
            l += l2;
            g += g2;
        } else {
            c = surrogate(ratio, adv[i], eps, &l, &g);
            float bound = -param * adv[i];
            if (mode == 1 && adv[i] < 0.0f && l > bound) {
                l = bound;
                g = 0.0f;
                c = 1;
            }
        }
        loss[i] = l;
        dlogp[i] = g;
        clipped[i] = c;
    }
}

// 0.5 * max((v - R)^2, (clip(v, v_old +- eps) - R)^2) and its derivative in v.
extern "C" __global__ void rl_value_loss(float *loss, float *dv, const float *v, const float *v_old, const float *ret, long n, float eps) {
    FOR_EACH(i, n) {
        float d = v[i] - v_old[i];
        float vc = v_old[i] + fminf(fmaxf(d, -eps), eps);
        float a = (v[i] - ret[i]) * (v[i] - ret[i]), b = (vc - ret[i]) * (vc - ret[i]);
        if (a >= b) {
            loss[i] = 0.5f * a;
            dv[i] = v[i] - ret[i];
        } else {
            loss[i] = 0.5f * b;
            dv[i] = fabsf(d) <= eps ? vc - ret[i] : 0.0f;
        }
    }
}
