"""Parameters and MACs as numbers, and the closed-form cost of the basic operators.

Conventions are fvcore's (see :mod:`archsearch.cost.analytic`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Estimate", "linear", "norm", "conv", "conv_out", "ceil_div"]


@dataclass
class Estimate:
    """Parameters and MACs, with a per-module breakdown of MACs."""

    params: int = 0
    macs: int = 0
    by_module: dict[str, int] = field(default_factory=dict)

    def add(self, params: int = 0, macs: int = 0) -> Estimate:
        self.params += int(params)
        self.macs += int(macs)
        return self

    def merge(self, other: Estimate, name: str | None = None) -> Estimate:
        self.params += other.params
        self.macs += other.macs
        if name is not None:
            self.by_module[name] = self.by_module.get(name, 0) + other.macs
        return self


def linear(n: int, cin: int, cout: int, bias: bool = True) -> Estimate:
    return Estimate(cin * cout + (cout if bias else 0), n * cin * cout)


def norm(n: int, c: int) -> Estimate:
    return Estimate(2 * c, 5 * n * c)


def conv(out_hw: int, cin: int, cout: int, k: int, groups: int = 1, bias: bool = True) -> Estimate:
    per_out = (cin // groups) * k * k
    return Estimate(cout * per_out + (cout if bias else 0), out_hw * cout * per_out)


def conv_out(n: int, k: int, s: int, p: int) -> int:
    return (n + 2 * p - k) // s + 1


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)
