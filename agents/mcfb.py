"""MC-FB — measure-conservative forward-backward representations: Jeen, Bewley & Cullen, "Zero-Shot
Reinforcement Learning from Low Quality Data", NeurIPS 2024 (arXiv 2309.15178).

FB (agents/fb.py) over-estimates the values of actions the data never shows. MC-FB adds a CQL-style penalty on
the measures M_k(s, a, z; s⁺) = F_k(s, a, z)ᵀB(s⁺), for every sampled z and every batch next state s'_j, over
the 12-action sample set of FB.sample_set_forward (x_im: the state each sample is evaluated at):

    P_MC = Σ_k mean_ij [ log Σ_m exp M_k(x_im, a_im, z_i; s'_j) − M_k(s_i, a_i, z_i; s'_j) ]

with the same gradient-carrying B as the measure loss, added as α·P, α tuned by dual descent towards P = 50
(FB.penalty_weight). Defaults: enjeeneer/zero-shot-rl agents/cfb/config.yaml (ConservativeConfig: actor lr
3e-5, K 12, half uniform, target penalty 50, Lagrange on). No importance-sampling correction.
"""
from __future__ import annotations

from offrl.registry import register_agent
from offrl.agents.fb import FB, SMALL_CONSERVATIVE, ConservativeConfig


class MCFB(FB):
    def conservative_penalty(self, obs, actions, next_obs, z, f_data, b_next):
        f = self.sample_set_forward(obs, actions, next_obs, z, f_data)  # [S, 2, K, B, d]
        b_t = b_next.transpose(-1, -2)
        m = f @ b_t[:, None, None]  # [S, 2, K, B, B]
        m_data = f_data @ b_t[:, None]  # [S, 2, B, B]
        return (m.logsumexp(2) - m_data).mean((-1, -2)).sum(1)


register_agent("mcfb", MCFB, ConservativeConfig, paper="Jeen, Bewley & Cullen, NeurIPS 2024 (arXiv 2309.15178)",
               family="zero-shot, reward-free, conservative", base="fb",
               family_defaults={"pointgoals": SMALL_CONSERVATIVE})
