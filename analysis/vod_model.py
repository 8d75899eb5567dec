"""Analytical server load of P2P video-on-demand policies (the DynaPeer paper's section 3 and its baselines).

``server_load(policy, params)`` is the mean number of concurrent server streams in steady state (a stream
is one video at the play rate ``Pr``; a partial stream counts its share), summed over the catalogue: with
Zipf popularity ``p_i`` (:mod:`scenarios.workload`) title *i* gets Poisson requests at ``lambda_i = lambda p_i``,
every formula below is per title, then summed. ``python -m analysis.vod_model`` prints the paper's Fig. 3
comparison at its Table 2 parameters (:data:`PAPER_TABLE2`); :mod:`analysis.vod_sim` simulates the same
mechanisms request by request. ``docs/dynapeer.md`` discusses the results.

Symbols: ``L`` video length (min); ``B`` peer buffer (minutes of video at the play rate); ``O`` peer upload;
``c = O/Pr`` a peer's upload in streams; ``N = Pr/O`` peers needed for a stream (the paper's ``N_i``);
``X = max(1, N)`` the extended-buffer factor (a peer that sends only ``1/N`` of a stream keeps only that share,
so ``B`` minutes of buffer hold ``N B`` minutes of its share; ``X = 1`` with ``extended_buffer=False``).

Baselines
---------
* ``unicast``: a server stream per viewer, ``lambda L`` (Little's law).
* ``patching_opt`` / ``patching``: threshold Patching, a server multicast per window of ``T`` minutes and a server
  unicast patch of the missed prefix for every joiner, ``S(T) = (L + lambda T^2/2) / (T + 1/lambda)``. ``patching_opt``
  takes each title's optimum ``T* = (sqrt(2 lambda L + 1) - 1)/lambda`` (``S = sqrt(2 lambda L + 1) - 1``);
  ``patching`` caps it by the buffer, ``T = min(T*, B)``: a joiner buffers ``T`` minutes of the multicast
  while it plays the patch. Both are exact (renewal-reward) for Poisson arrivals.
* ``chaining``: each client forwards what it plays to the next one if that one arrives within ``B`` minutes,
  uploading at the play rate (Chaining's assumption): ``S = lambda L e^{-lambda B}``, exact. With
  ``chaining_upload_kbps`` below the play rate: ``lambda L (1 - c (1 - e^{-lambda B}))``.
* ``promise`` (PROMISE-like multi-supplier unicast; our model, the paper gives none): a client is served by
  several supplying peers of its title, each sending ``c`` of a stream; suppliers cache the whole video
  (PROMISE's assumption, buffer >= ``L``) but, as in the paper (copyright: nothing stored for good), only
  supply while they are in the system. A request takes the free upload of earlier viewers, oldest first, the
  server the rest. With ``c <= 1`` a request can only ever find its predecessor's upload free (each request
  takes everything free and adds ``c``), so ``S = lambda L (1 - c (1 - e^{-lambda L}))``, exact for the mechanism.
* ``pn2pm`` / ``pn2pm_opt`` (Pn2Pm-like, Yang et al., the paper's [11]; our model): threshold patching with window
  ``P`` where peers upload at the play rate (Pn2Pm's requirement); a joiner's patch comes from an earlier
  member of the multicast group, and the *group* stores the multicast it receives so that it can replace the
  server for the next channel ("a group of clients store the available information of an existent server
  multicast channel to eliminate it"): members keep disjoint parts, so the group holds ``sum_k (B - x_k)``
  minutes (member *k* joined at offset ``x_k`` and uses ``x_k`` minutes for its own look-ahead). The next channel
  (first request after the window, ``D = P + E``, ``E ~ Exp(lambda)``, after this one) comes from the group iff its
  free members hold ``D``, else from the server: ``S = L P(server) / (P + 1/lambda)``, with ``P(server)`` from the
  compound-Poisson law of the group's buffer (:func:`pn2pm_server_probability`, which also discounts members
  still busy sending a patch at ``D``). Patches never reach the server (with ``k-1`` members at most ``k-2`` are
  patching). ``pn2pm`` uses DynaPeer's window (``P = B``); ``pn2pm_opt`` each title's best ``P`` in ``[0, B]``.

DynaPeer
--------
Section 3's equations (3)-(5), (7) and (9) are not legible in our copy of the paper; the model is rebuilt from
its text and the surviving equations (1), (2), (6) and (8). Choices where the paper is vague are marked (choice).

* Virtual server VS(j, s, W): peer *k* (arrived at ``a_k``, offset ``x_k`` in its channel) can send its share of
  any stream of the title that starts at position 0 at time ``t`` iff ``t - a_k <= W_k`` and its upload is free.
  Unicast: ``W_k = min(L, X B)`` (the extended collaboration window). Multicast: ``W_k = X (B - x_k)``: patching
  look-ahead takes ``x_k`` minutes of the buffer first (section 2.3: the extended buffer "can be applied only in
  the unused portion"); this is the paper's "worst collaboration buffer ... multiplied by N_i".
* Full- and partial-stream collaboration (section 2.1): a new stream takes the free shares of eligible peers
  up to a whole stream; the server sends the rest (``partial_multicast=False``: a channel the peers cannot
  fill comes wholly from the server, as the paper's rule (4)). Peers stay online until they have sent what
  they committed to (as Chaining's and the paper's analyses assume).
* ``dynapeer_unicast``: each request is a unicast stream; with ``c <= 1`` the only free share a request finds is
  its predecessor's: ``S = lambda L (1 - c (1 - e^{-lambda W}))``, ``W = min(L, X B)`` (exact). PROMISE with an ``X B``
  instead of an ``L`` window.
* ``dynapeer_multicast``: patching window ``P = B`` (equation (2): ``G_i = lambda_i B``; ``patch_window_min``
  changes it). A request within ``P`` of the channel start joins it and gets its patch from peers and server;
  a later one opens a new multicast channel, sourced by the previous channel's VS: its first ``R = ceil(N)``
  members, which send no patches (choice, ``reserve_sources``: "only N_i peers are required to propagate the
  multicast stream"), partially if fewer are eligible. Channels start at rate ``1/(P + 1/lambda)``; the next one
  ``P + E`` later; member *k* is then eligible iff ``E <= X B - P - (X-1) x_k``, so the eligible members are the first
  ``m = 1 + Pois(lambda u(E))``, ``u(E) = min(P, (X B - P - E)/(X - 1))``; the server's share is ``E[1 - min(1, c m)]``,
  integrated over ``E``. This replaces the all-or-nothing rule (4) (one server stream per period once
  ``G_i >= N_i``) by the probability that the chain of virtual servers breaks. Patches (equation (5), "using
  the streaming resources of VS_j-1 and VS_j") are a fluid, capacity-aware term: at time ``s`` after the channel
  start the joiners of ``(s/2, min(s, P)]`` are still patching and the members beyond the VS send ``c`` each
  (:func:`dynapeer_patch_minutes`). Left out, seen by the simulation: help from idle members of older channels
  (large when ``P`` is well below ``B``, so the formula is pessimistic there) and slot granularity. With
  ``reserve_sources=False`` the formula does not see VS members kept busy by patches when the next channel
  starts: it is then optimistic (Table 2: 144 against 186 simulated), which is why sources are reserved.
* ``dynapeer_helpers``: titles whose collaboration group is too small, ``G_i = lambda_i B < N`` (equation (2)
  against ``N_i``), get ``ceil(N) - 1`` Helpers per channel: members beyond the VS of the other titles' channels
  ("the idle peers of over-sized VSs"), which join the helped channel at its start, keep their share of it and
  count as eligible peers while ``t - attach <= X (B - x_h)``. Supply and demand are rates (equations (6)-(8) in
  steady state, :func:`helper_allocation`): helpers with the largest free buffer are used first, which sets
  their look-ahead ``x_h``; if they run short, the needy titles with the fewest requirements (most popular)
  are helped first.

Bounds (:func:`lower_bounds`): server-only immediate-service multicast ``S >= sum ln(lambda_i L + 1)`` (patching
obeys it, P2P schemes need not); peers uploading ``u < Pr`` only what they watch: ``S >= (1 - u/Pr) lambda L``.
"""

from __future__ import annotations

import argparse
import functools
import math
import sys
from dataclasses import dataclass, field, replace

import numpy as np

from scenarios.workload import Workload

POLICIES: tuple[str, ...] = (
    "unicast", "patching", "patching_opt", "chaining", "promise", "pn2pm", "pn2pm_opt",
    "dynapeer_unicast", "dynapeer_multicast", "dynapeer_helpers",
)
"""Every policy :func:`server_load` knows, in the order of the comparison table."""

LABELS: dict[str, str] = {
    "unicast": "Unicast",
    "patching": "Patching (T <= B)",
    "patching_opt": "Patching (optimal T)",
    "chaining": "Chaining (O = Pr)",
    "promise": "PROMISE-like",
    "pn2pm": "Pn2Pm (O = Pr, P = B)",
    "pn2pm_opt": "Pn2Pm (O = Pr, best P)",
    "dynapeer_unicast": "DynaPeer unicast",
    "dynapeer_multicast": "DynaPeer multicast",
    "dynapeer_helpers": "DynaPeer multicast + Helpers",
}

SERVER_ONLY_MULTICAST = frozenset({"patching", "patching_opt"})
"""Policies the server-only multicast bound ``sum ln(lambda_i L + 1)`` applies to."""


@dataclass(frozen=True)
class VoDParams:
    """A parameter point: the workload (requests), the peers (upload, buffer) and the model's choices.

    ``patch_window_min``: DynaPeer's and ``pn2pm``'s patching window ``P`` (``None``: the buffer ``B``, the
    paper's equation (2); capped at ``B``). ``extended_buffer``: DynaPeer's ``X = N`` (else 1).
    ``partial_multicast``: a DynaPeer VS too small for a whole channel sends part of it. ``reserve_sources``: a
    channel's first ``ceil(N)`` members only source the next channel (no patches). ``chaining_upload_kbps`` /
    ``pn2pm_upload_kbps``: upload those schemes assume (``None``: the play rate, their own assumption).
    """

    workload: Workload = field(default_factory=Workload)
    upload_kbps: float = 750.0
    buffer_min: float = 15.0
    extended_buffer: bool = True
    partial_multicast: bool = True
    reserve_sources: bool = True
    patch_window_min: float | None = None
    chaining_upload_kbps: float | None = None
    pn2pm_upload_kbps: float | None = None

    def __post_init__(self) -> None:
        if self.upload_kbps <= 0 or self.buffer_min <= 0:
            raise ValueError("upload and buffer must be > 0")
        if self.patch_window_min is not None and self.patch_window_min < 0:
            raise ValueError("the patching window must be >= 0")

    @property
    def rates(self) -> np.ndarray:
        """``lambda_i`` per title (requests/min), aligned with ``workload.titles``."""
        return self.workload.video_rates()

    @property
    def L(self) -> float:  # noqa: N802 - the paper's symbol
        return self.workload.length_min

    @property
    def B(self) -> float:  # noqa: N802 - the paper's symbol
        return self.buffer_min

    @property
    def c(self) -> float:
        """A peer's upload in streams, ``O / Pr``."""
        return self.upload_kbps / self.workload.play_rate_kbps

    @property
    def N(self) -> float:  # noqa: N802 - the paper's symbol
        """Peers needed for one stream, ``Pr / O``."""
        return self.workload.play_rate_kbps / self.upload_kbps

    @property
    def X(self) -> float:  # noqa: N802
        """Extended-buffer factor: ``max(1, N)`` with the extended buffer, 1 without."""
        return max(1.0, self.N) if self.extended_buffer else 1.0

    @property
    def P(self) -> float:  # noqa: N802 - the paper's patching window
        """DynaPeer's (and ``pn2pm``'s) patching window, minutes."""
        return self.B if self.patch_window_min is None else min(self.patch_window_min, self.B)

    @property
    def unicast_window(self) -> float:
        """DynaPeer-unicast collaboration window ``min(L, X B)``."""
        return min(self.L, self.X * self.B)

    @property
    def chaining_c(self) -> float:
        up = self.workload.play_rate_kbps if self.chaining_upload_kbps is None else self.chaining_upload_kbps
        return up / self.workload.play_rate_kbps

    @property
    def pn2pm_c(self) -> float:
        up = self.workload.play_rate_kbps if self.pn2pm_upload_kbps is None else self.pn2pm_upload_kbps
        return up / self.workload.play_rate_kbps

    @property
    def vs_size(self) -> int:
        """Peers of a DynaPeer channel that form its virtual server: ``R = ceil(N)`` (at least 1)."""
        return max(1, math.ceil(self.N - 1e-9))

    @property
    def helper_count(self) -> int:
        """Helpers a needy channel gets: with its first member they make a whole stream, ``ceil(N) - 1``."""
        return max(0, math.ceil(self.N - 1e-9) - 1)

    def needy(self) -> np.ndarray:
        """Titles whose collaboration group is too small (the paper's ``G_i = lambda_i B < N_i``)."""
        return self.rates * self.B < self.N - 1e-12


PAPER_TABLE2 = VoDParams(workload=Workload(videos=100, zipf=0.729, rate_per_min=10.0, length_min=90.0,
                                           play_rate_kbps=1500.0, duration_min=600.0),
                         upload_kbps=750.0, buffer_min=15.0)
"""The paper's Table 2: 100 titles, Zipf 0.729, 10 requests/min, L = 90 min, Pr = 1500 kbit/s, O = 750 kbit/s,
B = 15 min (and 10 hours of requests for the simulation)."""


# --- numerical helpers ----------------------------------------------------------------------------------

def _pois_vec(mu: float) -> np.ndarray:
    """Poisson pmf ``P(K = k)`` for k = 0..K, K well into the tail."""
    kmax = int(mu + 10 * math.sqrt(mu) + 12)
    if mu <= 0:
        out = np.zeros(kmax + 1)
        out[0] = 1.0
        return out
    k = np.arange(kmax + 1)
    return np.exp(-mu + k * math.log(mu) - _LGAMMA[: kmax + 1])


_LGAMMA = np.array([math.lgamma(i + 1) for i in range(4096)])


def _poisson_pmf(mu: np.ndarray, k: int) -> np.ndarray:
    return np.exp(-mu + k * np.log(np.maximum(mu, 1e-300)) - math.lgamma(k + 1)) if k else np.exp(-mu)


def _short_fraction(mu: np.ndarray, c: float, base: float) -> np.ndarray:
    """``E[1 - min(1, c (base + K))]`` for ``K ~ Pois(mu)``: the server's share with ``base + K`` peers."""
    mu = np.asarray(mu, dtype=float)
    out = np.zeros_like(mu)
    k = 0
    while c * (base + k) < 1 - 1e-12:
        out += _poisson_pmf(mu, k) * (1 - c * (base + k))
        k += 1
    return out


def _short_any(mu: np.ndarray, c: float, base: float) -> np.ndarray:
    """``P(c (base + K) < 1)`` for ``K ~ Pois(mu)``: the peers cannot make a whole stream."""
    mu = np.asarray(mu, dtype=float)
    out = np.zeros_like(mu)
    k = 0
    while c * (base + k) < 1 - 1e-12:
        out += _poisson_pmf(mu, k)
        k += 1
    return out


_GL64 = np.polynomial.legendre.leggauss(64)
_GL24 = np.polynomial.legendre.leggauss(24)
_GL32 = np.polynomial.legendre.leggauss(32)


def _integrate(f, a: float, b: float) -> float:
    """Gauss-Legendre integral of a vectorised ``f`` on ``[a, b]`` (0 if ``b <= a``)."""
    if b <= a:
        return 0.0
    x = 0.5 * (b - a) * _GL64[0] + 0.5 * (b + a)
    return float(0.5 * (b - a) * np.dot(_GL64[1], f(x)))


# --- baselines ------------------------------------------------------------------------------------------

def patching_threshold(lam: np.ndarray, L: float) -> np.ndarray:  # noqa: N803
    """Optimal threshold ``T* = (sqrt(2 lambda L + 1) - 1) / lambda`` per title."""
    return (np.sqrt(2 * lam * L + 1) - 1) / lam


def patching_load(lam: np.ndarray, L: float, T: np.ndarray | float) -> np.ndarray:  # noqa: N803
    """Threshold-patching server streams ``(L + lambda T^2/2) / (T + 1/lambda)`` per title."""
    T = np.asarray(T, dtype=float)  # noqa: N806
    return (L + lam * T**2 / 2) / (T + 1 / lam)


def predecessor_share_load(lam: np.ndarray, L: float, c: float, window: float) -> np.ndarray:  # noqa: N803
    """``lambda L (1 - min(1, c) (1 - e^{-lambda W}))``: each request gets its predecessor's ``c`` if it came
    within ``W`` (Chaining, PROMISE-like and DynaPeer-unicast)."""
    return lam * L * (1 - min(1.0, c) * (1 - np.exp(-lam * window)))


_IH_EXACT = 12
_IH_K = np.arange(_IH_EXACT + 1)
_IH_SIGN_BINOM = np.array([[(-1.0) ** k * math.comb(n, k) if k <= n else 0.0 for k in range(_IH_EXACT + 1)]
                           for n in range(_IH_EXACT + 1)])
_IH_FACT = np.array([math.factorial(n) for n in range(_IH_EXACT + 1)], dtype=float)


def _erf(x: np.ndarray) -> np.ndarray:
    """Error function (Abramowitz and Stegun 7.1.26, |error| < 1.5e-7), vectorised."""
    sign = np.sign(x)
    x = np.abs(x)
    t = 1 / (1 + 0.3275911 * x)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return sign * (1 - poly * np.exp(-x * x))


def _irwin_hall_cdf(n: np.ndarray, z: np.ndarray) -> np.ndarray:
    """``P(U_1 + ... + U_n <= z)`` for independent uniforms on (0, 1), elementwise (normal beyond n = 12)."""
    n, z = np.broadcast_arrays(np.asarray(n, dtype=int), np.asarray(z, dtype=float))
    shape = n.shape
    n, z = n.ravel(), z.ravel()
    out = np.where(z >= n, 1.0, 0.0)
    inside = (z > 0) & (z < n)
    big = inside & (n > _IH_EXACT)
    out[big] = 0.5 * (1 + _erf((z[big] - n[big] / 2) / np.sqrt(n[big] / 6)))
    small = inside & (n <= _IH_EXACT)
    if small.any():
        ns, zs = n[small], z[small]
        diff = zs[:, None] - _IH_K[None, :]
        terms = np.where(diff > 0, _IH_SIGN_BINOM[ns] * np.maximum(diff, 0.0) ** ns[:, None], 0.0)
        out[small] = np.clip(terms.sum(axis=1) / _IH_FACT[ns], 0.0, 1.0)
    return out.reshape(shape)


def _group_buffer_cdf(lam: float, B: float, u: np.ndarray, y: np.ndarray) -> np.ndarray:  # noqa: N803
    """``P(Y < y)`` for ``Y = sum_j (B - x_j)`` over the Poisson(``lam``) arrivals ``x_j`` in ``(0, u]``
    (elementwise over the arrays ``u`` > 0 and ``y``)."""
    u, y = np.broadcast_arrays(np.asarray(u, dtype=float), np.asarray(y, dtype=float))
    mu = lam * u
    kmax = int(mu.max() + 10 * math.sqrt(mu.max()) + 12)
    k = np.arange(kmax + 1)
    pmf = np.exp(-mu[:, None] + k[None, :] * np.log(np.maximum(mu, 1e-300))[:, None] - _LGAMMA[None, : kmax + 1])
    n = k[None, 1:]
    # n B - u (V_1 + ... + V_n) < y with V uniform on (0, 1)
    z = (n * B - y[:, None]) / u[:, None]
    cdf = pmf[:, 0] + (pmf[:, 1:] * (1 - _irwin_hall_cdf(n, z))).sum(axis=1)
    return np.where(y > 0, cdf, 0.0)


def pn2pm_server_probability(lam: float, B: float, P: float) -> float:  # noqa: N803
    """Probability that a Pn2Pm channel comes from the server.

    The next channel starts ``D = P + E`` after this one; the group holds ``B`` (first member) plus ``B - x_j``
    per joiner, except that a joiner still receiving its patch at ``D`` (one that came after ``D/2``) keeps its
    predecessor busy: the joiners up to ``D/2`` count fully and, if some joiner is still patching, the buffer lost
    is about ``x_last - x_m`` (offset of the last joiner minus that of the last joiner before ``D/2``, 0 if none),
    taken at their means. ``P = 0`` gives Chaining's ``e^{-lambda B}``.
    """
    if P <= 0:
        return math.exp(-lam * B)
    end = P + 40 / lam
    # beyond D - B > mean + 10 sd of the group's buffer (window P), the channel surely comes from the server
    y_hi = lam * P * (B - P / 2) + 10 * math.sqrt(lam * P * (B * B - B * P + P * P / 3)) + 1.0
    tail = 0.0
    if y_hi + B - P < end:
        end = max(P, y_hi + B - P)
        tail = math.exp(-lam * end)
    # break points: where the window stops growing (E = P) and where the buffer condition starts to bite
    # (E = B - P), then geometrically out to ``end``
    cuts = {0.0, P, max(0.0, B - P), B, 2 * B, end}
    x = 2 * B
    while x < end:
        x *= 2
        cuts.add(min(x, end))
    pts = sorted(c for c in cuts if c <= end)
    nodes, weights = [], []
    for a, b in zip(pts[:-1], pts[1:], strict=False):
        if b > a:
            nodes.append(0.5 * (b - a) * _GL24[0] + 0.5 * (b + a))
            weights.append(0.5 * (b - a) * _GL24[1])
    E = np.concatenate(nodes)  # noqa: N806
    D = P + E  # noqa: N806
    u = np.minimum(D / 2, P)
    span = np.maximum(0.0, P - D / 2)
    p_none = np.exp(-lam * span)
    with np.errstate(divide="ignore", invalid="ignore"):
        x_last = np.where((span > 0) & (p_none < 1), P - (1 / lam - span * p_none / (1 - p_none)), 0.0)
    x_m = u - (1 - np.exp(-lam * u)) / lam
    lost = np.maximum(0.0, x_last - x_m)
    fail = p_none * _group_buffer_cdf(lam, B, u, D - B) + (1 - p_none) * _group_buffer_cdf(lam, B, u, D - B + lost)
    return float(min(1.0, np.dot(np.concatenate(weights), lam * np.exp(-lam * E) * fail) + tail))


def pn2pm_title(lam: float, L: float, B: float, P: float) -> float:  # noqa: N803
    """Pn2Pm server streams for one title with window ``P``."""
    return L * pn2pm_server_probability(lam, B, P) / (P + 1 / lam)


def _golden_min(f, a: float, b: float, grid: int = 6, iters: int = 12) -> tuple[float, float]:
    """Minimum of ``f`` on ``[a, b]``: a coarse grid, then golden-section search around its best point."""
    xs = np.linspace(a, b, grid)
    ys = [f(float(x)) for x in xs]
    i = int(np.argmin(ys))
    lo, hi = float(xs[max(0, i - 1)]), float(xs[min(grid - 1, i + 1)])
    best_x, best_y = float(xs[i]), float(ys[i])
    g = (math.sqrt(5) - 1) / 2
    x1, x2 = hi - g * (hi - lo), lo + g * (hi - lo)
    f1, f2 = f(x1), f(x2)
    for _ in range(iters):
        if f1 <= f2:
            hi, x2, f2 = x2, x1, f1
            x1 = hi - g * (hi - lo)
            f1 = f(x1)
        else:
            lo, x1, f1 = x1, x2, f2
            x2 = lo + g * (hi - lo)
            f2 = f(x2)
    for x, y in ((x1, f1), (x2, f2)):
        if y < best_y:
            best_x, best_y = x, y
    return best_x, best_y


# --- DynaPeer -------------------------------------------------------------------------------------------

def _channel_server_share(lam: float, prm: VoDParams, P: float, helpers: int = 0,  # noqa: N803
                          helper_x: float = 0.0) -> float:
    """Mean server share of a new DynaPeer multicast channel (1 = the server sends all of it).

    ``E ~ Exp(lambda)``: the gap between the previous channel's window end and the new request; member *k* of the
    previous channel (offset ``x_k``) is eligible iff ``E <= X B - P - (X-1) x_k``; ``helpers`` helpers with
    look-ahead ``helper_x`` are eligible iff ``E <= X (B - helper_x) - P``.
    """
    X, B, c = prm.X, prm.B, prm.c  # noqa: N806
    e_first = X * B - P
    e_help = X * (B - helper_x) - P if helpers else -1.0

    def share(m_base: float, mu) -> np.ndarray:
        return _short_fraction(mu, c, m_base) if prm.partial_multicast else _short_any(mu, c, m_base)

    def u_of(E):  # noqa: N803
        if X <= 1 + 1e-12:
            return np.full_like(E, P)
        return np.clip((X * B - P - E) / (X - 1), 0.0, P)

    cuts = sorted({0.0, max(0.0, e_first), max(0.0, e_help), max(0.0, min(e_first, X * (B - P)))})
    total = 0.0
    for a, b in zip(cuts[:-1], cuts[1:], strict=False):
        mid = 0.5 * (a + b)
        first_ok = mid <= e_first
        base = (1.0 if first_ok else 0.0) + (helpers if helpers and mid <= e_help else 0.0)

        def f(E, base=base, first_ok=first_ok):  # noqa: N803
            mu = lam * u_of(E) if first_ok else np.zeros_like(E)
            return lam * np.exp(-lam * E) * share(base, mu)

        total += _integrate(f, a, b)
    return total + math.exp(-lam * cuts[-1])  # beyond every limit nobody is eligible: all from the server


def dynapeer_patch_minutes(lam: float, prm: VoDParams, P: float, extra: float = 0.0) -> float:  # noqa: N803
    """Mean server stream-minutes of patches per DynaPeer channel (fluid, capacity-aware).

    At time ``s`` after the channel start the joiners of ``(s/2, min(s, P)]`` still receive their patch (``A2`` of
    them), those of ``(0, s/2]`` are done (``A1``); the members that may send patches are those beyond the VS,
    ``max(0, 1 + A1 + A2 - R)`` (``R = ceil(N)`` with ``reserve_sources``, else 0), plus ``extra`` helpers, each
    sending ``c``. The server sends ``E[(A2 - c (max(0, 1 + A1 + A2 - R) + extra))^+]``, integrated over ``(0, 2P)``.
    """
    if P <= 0:
        return 0.0
    c = prm.c
    R = prm.vs_size if prm.reserve_sources else 0  # noqa: N806
    total = 0.0
    for a, b in ((0.0, P), (P, 2 * P)):
        half, mid = 0.5 * (b - a), 0.5 * (b + a)
        for node, weight in zip(*_GL24, strict=True):
            s = mid + half * node
            p1 = _pois_vec(lam * min(s / 2, P))
            p2 = _pois_vec(lam * max(0.0, min(s, P) - s / 2))
            k1 = np.arange(p1.size)[:, None]
            k2 = np.arange(p2.size)[None, :]
            val = np.maximum(0.0, k2 - c * (np.maximum(0, 1 + k1 + k2 - R) + extra))
            total += half * weight * float(p1 @ val @ p2)
    return total


def dynapeer_multicast_title(lam: float, prm: VoDParams, P: float | None = None, helpers: int = 0,  # noqa: N803
                             helper_x: float = 0.0) -> float:
    """DynaPeer multicast server streams of one title (``helpers`` helpers per channel if > 0)."""
    P = prm.P if P is None else min(P, prm.B)  # noqa: N806
    share = _channel_server_share(lam, prm, P, helpers, helper_x)
    patches = dynapeer_patch_minutes(lam, prm, P, extra=float(helpers))
    return (prm.L * share + patches) / (P + 1 / lam)


def _helper_supply(prm: VoDParams, h: float, free: np.ndarray) -> float:
    """Helper candidates with offset ``<= h`` made per minute: members beyond the VS of the non-needy titles'
    channels, times the fraction ``free`` of them not busy sending patches."""
    lam = prm.rates
    P, R = prm.P, (prm.vs_size if prm.reserve_sources else 0)  # noqa: N806
    total = 0.0
    for i in np.flatnonzero(~prm.needy()):
        pmf = _pois_vec(lam[i] * min(h, P))
        beyond = float(pmf @ np.maximum(0, 1 + np.arange(pmf.size) - R))
        total += free[i] * beyond / (P + 1 / lam[i])
    return total


def _turnover(prm: VoDParams, x_h: float) -> np.ndarray:
    """Fresh helpers a needy channel needs, per helper: an unused one moves on to the next channel, so only
    those used (next request within their window) or gone (their own video ended) are replaced."""
    lam, P, L = prm.rates, prm.P, prm.L  # noqa: N806
    wait = max(0.0, prm.X * (prm.B - x_h) - P)
    return np.minimum(1.0, (1 - np.exp(-lam * wait)) + (P + 1 / lam) / max(L - x_h, 1e-9))


def helper_allocation(prm: VoDParams) -> tuple[np.ndarray, float, float, float]:
    """Equations (6)-(8) in steady state: which needy titles get helpers, and how good the helpers are.

    Supply (the paper's ``H_A = sum (G_i - N_i)``, here per minute): members beyond the VS of the non-needy
    titles' channels, times the fraction of their upload not taken by patches (``1 - peer-sent patch minutes /
    (c x members x 2P)``). Demand: ``k = ceil(N) - 1`` helpers per needy channel, times :func:`_turnover`.
    Candidates with the smallest offsets (largest free buffer) go first: the offset ``h`` where supply meets
    demand bounds those used, and their mean ``x_h`` sets the helpers' window ``X (B - x_h)``. If supply falls
    short, the needy titles with the fewest requirements (most popular) are helped first (equation (8)).

    Returns ``(helped fraction per title, supply per minute, demand per minute, x_h)``.
    """
    lam = prm.rates
    needy = prm.needy()
    k = prm.helper_count
    P, c = prm.P, prm.c  # noqa: N806
    frac = np.zeros_like(lam)
    if k == 0 or not needy.any() or needy.all() or P <= 0:
        return frac, 0.0, 0.0, 0.0
    R = prm.vs_size if prm.reserve_sources else 0  # noqa: N806
    free = np.zeros_like(lam)
    for i in np.flatnonzero(~needy):
        pmf = _pois_vec(lam[i] * P)
        members = float(pmf @ np.maximum(0, 1 + np.arange(pmf.size) - R))
        peer_patch = lam[i] * P**2 / 2 - dynapeer_patch_minutes(float(lam[i]), prm, P)
        free[i] = 0.0 if members <= 0 else float(np.clip(1 - peer_patch / (c * members * 2 * P), 0, 1))
    full = _helper_supply(prm, P, free)
    r = 1 / (P + 1 / lam)
    x_h = 0.0
    for _ in range(30):
        demand = float((r * k * _turnover(prm, x_h))[needy].sum())
        if full <= demand:
            h = P
        else:
            lo, hi = 0.0, P
            for _ in range(30):
                mid = 0.5 * (lo + hi)
                lo, hi = (mid, hi) if _helper_supply(prm, mid, free) < demand else (lo, mid)
            h = hi
        grid = np.linspace(0.0, h, 17)
        sup = np.array([_helper_supply(prm, g, free) for g in grid])
        new_x = 0.0 if sup[-1] <= 0 else float(h - np.trapezoid(sup, grid) / sup[-1])
        done = abs(new_x - x_h) < 1e-3
        x_h = new_x if done else 0.5 * (x_h + new_x)
        if done:
            break
    need = r * k * _turnover(prm, x_h)
    demand = float(need[needy].sum())
    left = full
    for i in np.argsort(-lam):  # fewest requirements first: the most popular needy titles
        if not needy[i]:
            continue
        if need[i] <= left:
            frac[i], left = 1.0, left - need[i]
        else:
            frac[i], left = max(0.0, left) / need[i], 0.0
    return frac, full, demand, x_h


# --- the policies ---------------------------------------------------------------------------------------

def patch_windows(policy: str, prm: VoDParams) -> np.ndarray:
    """Per-title patching window (minutes) of a multicast policy (``T`` for patching, ``P`` otherwise)."""
    lam, L, B = prm.rates, prm.L, prm.B  # noqa: N806
    if policy == "patching_opt":
        return patching_threshold(lam, L)
    if policy == "patching":
        return np.minimum(patching_threshold(lam, L), B)
    if policy == "pn2pm_opt":
        return np.array(_pn2pm_best(prm)[0])
    if policy in ("pn2pm", "dynapeer_multicast", "dynapeer_helpers"):
        return np.full(lam.shape, prm.P)
    raise ValueError(f"{policy!r} has no patching window")


@functools.lru_cache(maxsize=64)
def _pn2pm_best(prm: VoDParams) -> tuple[tuple[float, ...], tuple[float, ...]]:
    if prm.pn2pm_c < 1 - 1e-12:
        raise ValueError("the Pn2Pm model needs peers uploading at least the play rate (pn2pm_upload_kbps)")
    best = [_golden_min(lambda P, x=float(x): pn2pm_title(x, prm.L, prm.B, P), 0.0, prm.B) for x in prm.rates]
    return tuple(b[0] for b in best), tuple(b[1] for b in best)


@functools.lru_cache(maxsize=256)
def _per_title(policy: str, prm: VoDParams) -> tuple[float, ...]:
    lam, L, B = prm.rates, prm.L, prm.B  # noqa: N806
    if policy == "unicast":
        out = lam * L
    elif policy in ("patching", "patching_opt"):
        out = patching_load(lam, L, patch_windows(policy, prm))
    elif policy == "chaining":
        out = predecessor_share_load(lam, L, prm.chaining_c, B)
    elif policy == "promise":
        out = predecessor_share_load(lam, L, prm.c, L)
    elif policy == "dynapeer_unicast":
        out = predecessor_share_load(lam, L, prm.c, prm.unicast_window)
    elif policy == "pn2pm":
        if prm.pn2pm_c < 1 - 1e-12:
            raise ValueError("the Pn2Pm model needs peers uploading at least the play rate (pn2pm_upload_kbps)")
        out = np.array([pn2pm_title(float(x), L, B, prm.P) for x in lam])
    elif policy == "pn2pm_opt":
        out = np.array(_pn2pm_best(prm)[1])
    elif policy == "dynapeer_multicast":
        out = np.array([dynapeer_multicast_title(float(x), prm) for x in lam])
    elif policy == "dynapeer_helpers":
        frac, _, _, x_h = helper_allocation(prm)
        plain = np.array(_per_title("dynapeer_multicast", prm))
        k = prm.helper_count
        helped = np.array([dynapeer_multicast_title(float(x), prm, helpers=k, helper_x=x_h) if f > 0 else 0.0
                           for x, f in zip(lam, frac, strict=True)])
        out = frac * helped + (1 - frac) * plain
    else:
        raise ValueError(f"unknown policy {policy!r}; known: {', '.join(POLICIES)}")
    return tuple(float(v) for v in out)


def server_load_per_title(policy: str, params: VoDParams = PAPER_TABLE2) -> np.ndarray:
    """Mean concurrent server streams of each title under ``policy`` (see the module docstring)."""
    return np.array(_per_title(policy, params))


def server_load(policy: str, params: VoDParams = PAPER_TABLE2) -> float:
    """Mean number of concurrent server streams of ``policy`` at ``params`` (summed over the catalogue)."""
    return float(sum(_per_title(policy, params)))


def lower_bounds(params: VoDParams = PAPER_TABLE2) -> dict[str, float]:
    """``multicast``: server-only immediate-service multicast, ``sum ln(lambda_i L + 1)``; ``peer_assisted``:
    peers uploading ``O < Pr`` only what they watch, ``(1 - O/Pr) lambda L``; ``unicast``: ``lambda L``."""
    lam, L = params.rates, params.L  # noqa: N806
    return {
        "multicast": float(np.log(lam * L + 1).sum()),
        "peer_assisted": float(max(0.0, 1 - params.c) * (lam * L).sum()),
        "unicast": float((lam * L).sum()),
    }


def table(params: VoDParams = PAPER_TABLE2) -> dict[str, float]:
    """``{policy: server load}`` for every policy."""
    return {p: server_load(p, params) for p in POLICIES}


# --- the paper's claims ---------------------------------------------------------------------------------

PAPER_CLAIMS: tuple[tuple[str, str, float], ...] = (
    ("dynapeer_helpers", "pn2pm", 45.0),
    ("dynapeer_helpers", "chaining", 59.0),
    ("dynapeer_helpers", "promise", 74.0),
    ("dynapeer_helpers", "patching", 75.0),
    ("pn2pm", "patching", 54.0),
    ("pn2pm", "chaining", 24.0),
    ("chaining", "patching", 39.0),
    ("promise", "unicast", 50.0),
    ("dynapeer_unicast", "unicast", 50.0),
    ("chaining", "unicast", 70.0),
)
"""Reductions the paper's section 4.2 states: ``(a, b, r)`` means "a's server load is r % below b's"."""


def paper_implied_loads() -> dict[str, float]:
    """Server loads the paper's percentages imply (its Fig. 3 is not in our copy): Unicast = 900 and PROMISE
    = 450 (50 % less), then DynaPeer+Helpers 74 % below PROMISE, Patching, Chaining and Pn2Pm from 75 / 59 / 45 %."""
    promise = 450.0
    helpers = promise * (1 - 0.74)
    return {
        "unicast": 900.0,
        "promise": promise,
        "dynapeer_unicast": 450.0,
        "patching": helpers / (1 - 0.75),
        "chaining": helpers / (1 - 0.59),
        "pn2pm": helpers / (1 - 0.45),
        "dynapeer_helpers": helpers,
    }


def reduction(a: float, b: float) -> float:
    """Percent by which load ``a`` lies below load ``b``."""
    return 100.0 * (1 - a / b) if b > 0 else float("nan")


def comparison_text(params: VoDParams = PAPER_TABLE2) -> str:
    """The Fig. 3 comparison table and the paragraph comparing it with the paper's claims."""
    loads = table(params)
    bounds = lower_bounds(params)
    dyn = loads["dynapeer_helpers"]
    wl = params.workload
    lines = [
        f"Server load (mean concurrent server streams): {wl.videos} titles, Zipf {wl.zipf}, "
        f"{wl.rate_per_min:g} req/min, L = {params.L:g} min, Pr = {wl.play_rate_kbps:g} kbit/s, "
        f"O = {params.upload_kbps:g} kbit/s, B = {params.B:g} min, DynaPeer P = {params.P:g} min",
        "",
        f"{'policy':30} {'streams':>8} {'vs Unicast':>11} {'DynaPeer+Helpers':>17}",
    ]
    for p in POLICIES:
        s = loads[p]
        better = "" if p == "dynapeer_helpers" else f"{reduction(dyn, s):+.1f}%"
        vs_unicast = 100.0 * (s / loads["unicast"] - 1) + 0.0
        lines.append(f"{LABELS[p]:30} {s:8.1f} {vs_unicast:+10.1f}% {better:>17}")
    lines += [
        "(last column: how much lower DynaPeer+Helpers' load is)",
        f"bounds: server-only multicast >= {bounds['multicast']:.1f}; peer-assisted with O < Pr >= "
        f"{bounds['peer_assisted']:.1f}",
        "",
        "The paper's claims (a's load this much below b's) against ours:",
        f"{'a vs b':36} {'paper':>6} {'ours':>7}",
    ]
    for a, b, claimed in PAPER_CLAIMS:
        extra = f" ({reduction(loads[a], loads[b + '_opt']):.0f}% vs {LABELS[b + '_opt']})" \
            if b + "_opt" in loads else ""
        if a + "_opt" in loads:
            extra += f" ({reduction(loads[a + '_opt'], loads[b]):.0f}% with {LABELS[a + '_opt']})"
        lines.append(f"{a + ' vs ' + b:36} {claimed:5.0f}% {reduction(loads[a], loads[b]):6.1f}%{extra}")
    implied = paper_implied_loads()
    lines += [
        "",
        "Loads the paper's percentages imply (Fig. 3 is not in our copy of the paper): "
        + ", ".join(f"{k} ~{v:.0f}" for k, v in implied.items()),
        "",
        claims_paragraph(loads, implied),
    ]
    return "\n".join(lines)


def claims_paragraph(loads: dict[str, float], implied: dict[str, float]) -> str:
    """Where and why our figures differ from the paper's 45 / 59 / 74 % (the numbers are filled in)."""
    dyn = loads["dynapeer_helpers"]
    return "\n".join([
        f"DynaPeer+Helpers is {reduction(dyn, loads['pn2pm']):.0f} % / {reduction(dyn, loads['chaining']):.0f} % / "
        f"{reduction(dyn, loads['promise']):.0f} % below Pn2Pm / Chaining / PROMISE here; "
        "the paper claims 45 / 59 / 74 %.",
        f"* PROMISE (74 % claimed, {reduction(dyn, loads['promise']):.0f} % here) is the closest: PROMISE-like "
        f"({loads['promise']:.1f}) and DynaPeer-unicast ({loads['dynapeer_unicast']:.1f}) both sit near the "
        f"peer-assisted bound (1 - O/Pr) lambda L = {0.5 * loads['unicast']:.0f}, the paper's '50 %'. The gap is "
        f"DynaPeer+Helpers itself: {dyn:.0f} streams here against the ~{implied['dynapeer_helpers']:.0f} the paper's "
        "percentages imply. The paper's rule (4)/(9) charges a title about one server stream per period once its "
        "VS is complete or helped (100 titles: ~100 streams, plus patches); our steady state also charges every "
        "break of the chain of virtual servers (a request after the collaboration window), the patches the peers' "
        "half-rate upload cannot carry, and helpers that are busy sending patches or have little free buffer "
        "(analysis.vod_sim confirms this, slightly higher still).",
        f"* Chaining (59 % claimed, {reduction(dyn, loads['chaining']):.0f} % here): the paper's percentages imply "
        f"Chaining ~{implied['chaining']:.0f} and Patching ~{implied['patching']:.0f} streams, about 1.5 times the "
        f"standard closed forms at Table 2 (Chaining {loads['chaining']:.1f}; Patching {loads['patching_opt']:.1f} "
        f"with the optimal threshold, {loads['patching']:.1f} with T <= B), which the simulation confirms; yet their "
        f"ratio matches ours (Chaining {reduction(loads['chaining'], loads['patching_opt']):.0f} % below optimal "
        f"Patching, the paper 39 %). Against a Chaining of ~{implied['chaining']:.0f} our DynaPeer+Helpers would be "
        f"{reduction(dyn, implied['chaining']):.0f} % lower.",
        f"* Pn2Pm (45 % claimed, {reduction(dyn, loads['pn2pm']):.0f} % here): our Pn2Pm model "
        f"({loads['pn2pm']:.1f} with DynaPeer's window P = B, near the paper's implied ~{implied['pn2pm']:.0f}) is "
        f"our reading of [11], whose formulas the paper does not give; with its best window per title it drops to "
        f"{loads['pn2pm_opt']:.1f} and DynaPeer+Helpers is only {reduction(dyn, loads['pn2pm_opt']):.0f} % lower.",
    ])


def with_overrides(params: VoDParams, **changes) -> VoDParams:
    """``params`` with some fields changed (workload fields go to the workload)."""
    wl_fields = {"videos", "zipf", "rate_per_min", "length_min", "play_rate_kbps", "duration_min", "keep"}
    wl = {k: v for k, v in changes.items() if k in wl_fields}
    rest = {k: v for k, v in changes.items() if k not in wl_fields}
    workload = replace(params.workload, **wl) if wl else params.workload
    return replace(params, workload=workload, **rest)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis.vod_model",
                                     description="Server load of VoD policies (the DynaPeer paper's Fig. 3).")
    parser.add_argument("--rate", type=float, help="requests per minute (Table 2: 10)")
    parser.add_argument("--buffer", type=float, help="peer buffer, minutes (15)")
    parser.add_argument("--upload", type=float, help="peer upload, kbit/s (750)")
    parser.add_argument("--zipf", type=float, help="Zipf skew (0.729)")
    parser.add_argument("--patch-window", type=float, help="DynaPeer's patching window P, minutes (default B)")
    args = parser.parse_args(argv)
    changes = {k: v for k, v in {"rate_per_min": args.rate, "buffer_min": args.buffer, "upload_kbps": args.upload,
                                 "zipf": args.zipf, "patch_window_min": args.patch_window}.items() if v is not None}
    print(comparison_text(with_overrides(PAPER_TABLE2, **changes)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
