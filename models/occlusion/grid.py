"""Where the occluder goes: the grid both occlusion methods share (and that imports neither)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class OcclusionGrid:
    """Occluder positions over a square ``size`` input: top-left corners ``0, S, 2S, ...``."""

    size: int
    window: int = 32
    stride: int = 8

    def __post_init__(self) -> None:
        if not 1 <= self.window <= self.size:
            raise ValueError(f"window must be in 1..{self.size}, got {self.window}")
        if self.stride < 1:
            raise ValueError(f"stride must be positive, got {self.stride}")

    @property
    def steps(self) -> int:
        """Positions per axis."""
        return (self.size - self.window) // self.stride + 1

    @property
    def offsets(self) -> list[int]:
        """Top (= left) coordinates of the occluder along one axis."""
        return [i * self.stride for i in range(self.steps)]

    def positions(self) -> list[tuple[int, int]]:
        """All (top, left) corners, row-major (the order of the flattened map)."""
        return [(r, c) for r in self.offsets for c in self.offsets]
