"""Seeded VoD workload: who asks for which video when (Poisson arrivals, Zipf-like popularity).

A :class:`Workload` is the request side of a video-on-demand experiment, as in the DynaPeer paper's
section 4.1 and Table 2: a catalogue of ``videos`` titles of equal length ``length_min`` and play rate
``play_rate_kbps``, requests arriving as a Poisson process of ``rate_per_min`` requests per minute for
``duration_min`` minutes, each asking for a title drawn independently from a Zipf-like law.

Zipf-like popularity (the paper's definition): the *i*-th most popular of *M* titles is chosen with
probability ``p_i = (1 / i**z) / sum_{j=1..M} 1 / j**z``, with skew ``z`` (0.729 in the paper, the classic
"video shop" fit; ``z = 0`` is uniform, larger ``z`` more skewed). Titles are numbered from 0 in order of
popularity: video 0 is the most popular. Per title, arrivals are then Poisson with rate
``lambda_i = rate_per_min * p_i`` (a thinned Poisson process), which is what every closed form in
:mod:`analysis.vod_model` sums over.

:meth:`Workload.requests` returns the request schedule for a seed (a ``numpy.random.Generator`` seeded
with it): the same seed gives the same schedule, so every delivery policy -- in the analytical model's
simulation (:mod:`analysis.vod_sim`) and in an emulated scenario -- sees exactly the same requests.

Scaling for emulation (:meth:`Workload.scaled`): the paper's workload (900 concurrent viewers, 90-minute
videos) is far too big and too slow to emulate. Every server-load formula of the model depends on the
per-title products ``lambda_i * L``, ``lambda_i * B`` (and ``lambda_i * T`` for a patching window ``T``) and
on the ratio ``O / Pr`` of peer upload to play rate only. The scaling rule keeps all of them:

* time is compressed by ``time_factor`` k: ``L' = L / k``, ``B' = B / k``, ``duration' = duration / k`` and
  ``lambda' = k * lambda``, so ``lambda_i L`` and ``lambda_i B`` are unchanged and every server load (in
  streams) is the same, reached k times faster;
* bit rates are divided by ``rate_factor``: ``Pr' = Pr / r`` (and the caller divides the peers' upload the
  same way, ``O' = O / r``; :func:`scale_peer` does it), so ``O / Pr`` is unchanged and the emulated links
  carry r times less traffic;
* the population is reduced by keeping only some titles, ``keep``: a list of popularity ranks (0-based)
  of the full catalogue. A kept title keeps its own rate ``lambda_i = rate * p_i`` with ``p_i`` from the
  *full* catalogue, so the server load of each kept title is exactly its term in the paper-scale sum,
  while the number of concurrent viewers drops to ``sum_{kept} lambda_i L``. (Dropping titles cannot keep
  the catalogue total ``lambda * L``; per title, everything is kept.)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

REQUEST_COLUMNS = ("time_s", "video", "client")
"""Columns of :meth:`Workload.requests`: arrival time in seconds from the start, title (0 = most popular),
client id (0, 1, ... in order of arrival)."""


def zipf_popularity(videos: int, skew: float) -> np.ndarray:
    """The paper's Zipf-like law: ``p_i proportional to 1 / i**skew`` for ranks i = 1..videos, summing to 1."""
    if videos < 1:
        raise ValueError(f"videos must be >= 1, got {videos}")
    if skew < 0:
        raise ValueError(f"the Zipf skew must be >= 0, got {skew}")
    w = np.arange(1, videos + 1, dtype=float) ** -float(skew)
    return w / w.sum()


@dataclass(frozen=True)
class Workload:
    """The request side of a VoD experiment (defaults: the DynaPeer paper's Table 2, for 10 hours).

    ``keep``: popularity ranks (0-based) of the full ``videos``-title catalogue that are requested at all;
    ``None`` keeps every title. Requests for a kept title arrive at its full-catalogue rate (see the module
    docstring); the ``video`` column of :meth:`requests` is the rank in the full catalogue.
    """

    videos: int = 100
    zipf: float = 0.729
    rate_per_min: float = 10.0
    length_min: float = 90.0
    play_rate_kbps: float = 1500.0
    duration_min: float = 600.0
    keep: tuple[int, ...] | None = field(default=None)

    def __post_init__(self) -> None:
        if self.rate_per_min <= 0 or self.length_min <= 0 or self.play_rate_kbps <= 0 or self.duration_min <= 0:
            raise ValueError("rate, length, play rate and duration must be > 0")
        zipf_popularity(self.videos, self.zipf)  # validates videos and skew
        if self.keep is not None:
            keep = tuple(int(k) for k in self.keep)
            if not keep or len(set(keep)) != len(keep) or min(keep) < 0 or max(keep) >= self.videos:
                raise ValueError(f"keep must list distinct ranks in 0..{self.videos - 1}, got {self.keep}")
            object.__setattr__(self, "keep", tuple(sorted(keep)))

    @property
    def titles(self) -> np.ndarray:
        """The requested titles (ranks in the full catalogue), most popular first."""
        return np.arange(self.videos) if self.keep is None else np.asarray(self.keep, dtype=int)

    def popularity(self) -> np.ndarray:
        """Full-catalogue probability of each requested title (sums to 1 unless titles were dropped)."""
        return zipf_popularity(self.videos, self.zipf)[self.titles]

    def video_rates(self) -> np.ndarray:
        """Per-title request rate ``lambda_i`` (requests per minute), aligned with :attr:`titles`."""
        return self.rate_per_min * self.popularity()

    @property
    def total_rate_per_min(self) -> float:
        """Rate of all requests together (``rate_per_min`` unless titles were dropped)."""
        return float(self.video_rates().sum())

    @property
    def mean_viewers(self) -> float:
        """Mean number of concurrent viewers in steady state, ``sum_i lambda_i L`` (Little's law)."""
        return self.total_rate_per_min * self.length_min

    def requests(self, seed: int) -> pd.DataFrame:
        """The request schedule for ``seed``: one row per request, sorted by time (:data:`REQUEST_COLUMNS`).

        Arrival times are a Poisson process of rate :attr:`total_rate_per_min` on ``[0, duration)``
        (exponential gaps), each request's title drawn independently with probability proportional to
        :meth:`popularity`. Deterministic for a seed (``numpy.random.default_rng(seed)``).
        """
        rng = np.random.default_rng(seed)
        rate_s = self.total_rate_per_min / 60.0
        horizon_s = self.duration_min * 60.0
        expected = rate_s * horizon_s
        chunk = int(expected + 6 * math.sqrt(expected) + 16)
        gaps = rng.exponential(1.0 / rate_s, size=chunk)
        times = np.cumsum(gaps)
        while times[-1] < horizon_s:  # practically never: a second chunk
            more = times[-1] + np.cumsum(rng.exponential(1.0 / rate_s, size=chunk))
            times = np.concatenate([times, more])
        times = times[times < horizon_s]
        p = self.popularity()
        idx = rng.choice(len(p), size=len(times), p=p / p.sum())
        return pd.DataFrame({
            "time_s": times,
            "video": self.titles[idx].astype(int),
            "client": np.arange(len(times), dtype=int),
        })

    def scaled(self, time_factor: float = 1.0, rate_factor: float = 1.0,
               keep: Sequence[int] | None = None) -> Workload:
        """A smaller workload with the same per-title ``lambda_i L``, ``lambda_i B`` and ``O / Pr``.

        ``time_factor`` k compresses time (lengths and duration / k, rate x k), ``rate_factor`` r divides the
        play rate, ``keep`` chooses the titles (ranks of the full catalogue; default: those already kept).
        Peer-side parameters (buffer minutes, upload rate) go through :func:`scale_peer` with the same factors.
        """
        if time_factor <= 0 or rate_factor <= 0:
            raise ValueError("scaling factors must be > 0")
        return replace(
            self,
            rate_per_min=self.rate_per_min * time_factor,
            length_min=self.length_min / time_factor,
            duration_min=self.duration_min / time_factor,
            play_rate_kbps=self.play_rate_kbps / rate_factor,
            keep=self.keep if keep is None else tuple(keep),
        )


def scale_peer(buffer_min: float, upload_kbps: float, time_factor: float = 1.0,
               rate_factor: float = 1.0) -> tuple[float, float]:
    """Peer buffer (minutes) and upload (kbit/s) under the scaling of :meth:`Workload.scaled`:
    ``(B / time_factor, O / rate_factor)``, so ``lambda_i B`` and ``O / Pr`` are unchanged."""
    if time_factor <= 0 or rate_factor <= 0:
        raise ValueError("scaling factors must be > 0")
    return buffer_min / time_factor, upload_kbps / rate_factor


PAPER_WORKLOAD = Workload()
"""The DynaPeer paper's Table 2 workload (100 titles, Zipf 0.729, 10 requests/min, 90 min, 1500 kbit/s), 10 h."""
