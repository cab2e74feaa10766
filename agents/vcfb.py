"""VC-FB — value-conservative forward-backward representations: Jeen, Bewley & Cullen, "Zero-Shot
Reinforcement Learning from Low Quality Data", NeurIPS 2024 (arXiv 2309.15178).

FB (agents/fb.py) over-estimates the values of actions the data never shows. VC-FB adds a CQL-style penalty on
the values Q_k(s, a, z) = F_k(s, a, z)ᵀz, for every sampled z, over the 12-action sample set of
FB.sample_set_forward (x_im: the state each sample is evaluated at):

    P_VC = Σ_k mean_i [ log Σ_m exp Q_k(x_im, a_im, z_i) − Q_k(s_i, a_i, z_i) ]

added to the F/B loss as α·P, α tuned by dual descent towards P = 50 (FB.penalty_weight). Defaults:
enjeeneer/zero-shot-rl agents/cfb/config.yaml (ConservativeConfig: actor lr 3e-5, K 12, half uniform,
target penalty 50, Lagrange on). No importance-sampling correction, as the official code.
"""
from __future__ import annotations

from offrl.registry import register_agent
from offrl.agents.fb import FB, SMALL_CONSERVATIVE, ConservativeConfig


class VCFB(FB):
    def conservative_penalty(self, obs, actions, next_obs, z, f_data, b_next):
        f = self.sample_set_forward(obs, actions, next_obs, z, f_data)  # [S, 2, K, B, d]
        q = (f * z[:, None, None]).sum(-1)  # [S, 2, K, B]
        q_data = (f_data * z[:, None]).sum(-1)  # [S, 2, B]
        return (q.logsumexp(2) - q_data).mean(-1).sum(1)


register_agent("vcfb", VCFB, ConservativeConfig, paper="Jeen, Bewley & Cullen, NeurIPS 2024 (arXiv 2309.15178)",
               family="zero-shot, reward-free, conservative", base="fb",
               family_defaults={"pointgoals": SMALL_CONSERVATIVE})
