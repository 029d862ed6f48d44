"""Paths through the latent space of a generator, for interpolation strips and animations.

An interpolation has ``rows`` independent paths, each sampled at ``steps`` points from t = 0 to
t = 1. The noise of a row moves between its two end points along a straight line (``lerp``) or
a great-circle arc (``slerp``). Class weights of a conditional generator move along a straight
line, so every row of weights still sums to one.
"""

import torch

PATHS = ("slerp", "linear")

# Below this sine of the angle between two vectors, slerp would divide by almost zero. The arc is
# then so close to the chord, or undefined for opposite vectors, that lerp replaces it.
PARALLEL_SINE = 1e-6


def interpolation_times(steps: int) -> torch.Tensor:
    """Return ``steps`` evenly spaced times float32 (steps,), exactly 0 first and exactly 1 last."""
    if steps < 2:
        raise ValueError(f"An interpolation needs at least 2 steps, got {steps}.")
    return torch.arange(steps, dtype=torch.float64).div(steps - 1).float()


def lerp(start: torch.Tensor, end: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
    """Interpolate linearly: ``(1 - t) * start + t * end``, broadcasting ``t`` against the vectors.

    The weighted sum, unlike ``start + t * (end - start)``, returns ``start`` exactly at t = 0 and
    ``end`` exactly at t = 1.
    """
    return (1 - t) * start + t * end


def slerp(start: torch.Tensor, end: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
    """Interpolate spherically between the vectors along the last dimension.

    start, end: (..., D); t: a float or a tensor that broadcasts against (..., 1). The result is
    ``(sin((1 - t) a) * start + sin(t a) * end) / sin(a)`` for the angle a between the vectors.
    When both vectors have the same norm, it moves along the great circle at constant angular speed
    and keeps that norm. When the norms differ, neither the norm nor the angular speed stays
    constant. Standard Gaussian noise in D dimensions has most of its mass near the sphere of
    radius sqrt(D), where the generator was trained, and two such vectors are nearly orthogonal.
    So the arc between them stays near that sphere, while the midpoint of the straight line has
    only about 1/sqrt(2) of that norm. Where the vectors are nearly parallel or nearly opposite (sine of
    their angle below ``PARALLEL_SINE``), and where one of them is zero, the result is ``lerp``.
    The result is exactly ``start`` at t = 0 and exactly ``end`` at t = 1.
    """
    t = torch.as_tensor(t, dtype=start.dtype, device=start.device)
    start_norm = start.norm(dim=-1, keepdim=True)
    end_norm = end.norm(dim=-1, keepdim=True)
    tiny = torch.finfo(start.dtype).tiny
    start_direction = start / start_norm.clamp_min(tiny)
    end_direction = end / end_norm.clamp_min(tiny)
    # The angle from the chord and the sum of the unit vectors stays accurate near 0 and pi,
    # where arccos of the dot product loses most of its digits.
    chord = (start_direction - end_direction).norm(dim=-1, keepdim=True)
    diagonal = (start_direction + end_direction).norm(dim=-1, keepdim=True)
    angle = 2 * torch.atan2(chord, diagonal)
    sine = torch.sin(angle)

    parallel = (sine < PARALLEL_SINE) | (start_norm == 0) | (end_norm == 0)
    safe_sine = torch.where(parallel, torch.ones_like(sine), sine)
    arc = (torch.sin((1 - t) * angle) * start + torch.sin(t * angle) * end) / safe_sine
    result = torch.where(parallel, lerp(start, end, t), arc)

    # The sines above give the end points only up to rounding, so these lines make them exact.
    result = torch.where(t == 0, start, result)
    return torch.where(t == 1, end, result)


def noise_path(start: torch.Tensor, end: torch.Tensor, steps: int, path: str = "slerp") -> torch.Tensor:
    """Sample each row's path from start to end. start, end: (rows, z_dim) -> (rows, steps, z_dim)."""
    if path not in PATHS:
        raise ValueError(f"Unknown interpolation path {path!r}. Use one of: {', '.join(PATHS)}.")
    if start.shape != end.shape or start.dim() != 2:
        raise ValueError(
            f"End points must both have shape (rows, z_dim), got {tuple(start.shape)} and {tuple(end.shape)}."
        )
    t = interpolation_times(steps).to(start)[None, :, None]  # (1, steps, 1)
    interpolate = slerp if path == "slerp" else lerp
    return interpolate(start[:, None, :], end[:, None, :], t)


def class_weight_path(start: torch.Tensor, end: torch.Tensor, steps: int) -> torch.Tensor:
    """Blend class weights linearly. start, end: float (rows, num_classes) -> (rows, steps, num_classes).

    Each blended row sums to one when both end rows do, so it stays a valid mixture of classes.
    """
    if start.shape != end.shape or start.dim() != 2:
        raise ValueError(
            f"Class weights must both have shape (rows, num_classes), got {tuple(start.shape)} and {tuple(end.shape)}."
        )
    t = interpolation_times(steps).to(start)[None, :, None]
    return lerp(start[:, None, :], end[:, None, :], t)


def _repeat_steps(values: torch.Tensor, steps: int) -> torch.Tensor:
    # (rows, ...) -> (rows, steps, ...), each row held fixed along its path.
    return values[:, None].expand(values.shape[0], steps, *values.shape[1:])


def _flatten_steps(values: torch.Tensor) -> torch.Tensor:
    # (rows, steps, ...) -> (rows * steps, ...), ordered row by row.
    return values.reshape(values.shape[0] * values.shape[1], *values.shape[2:])


def noise_batch(
    start: torch.Tensor, end: torch.Tensor, steps: int, path: str = "slerp", labels: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Build the generator batch of rows whose noise moves and whose labels stay fixed.

    start, end: (rows, z_dim); labels: None for an unconditional generator, or one label per row,
    class indices (rows,) or class weights (rows, num_classes). Returns noise (rows * steps, z_dim)
    and labels (rows * steps, ...) or None, ordered row by row.
    """
    z = _flatten_steps(noise_path(start, end, steps, path))
    if labels is None:
        return z, None
    if labels.shape[0] != start.shape[0]:
        raise ValueError(f"Need one label per row: {start.shape[0]} rows, got {labels.shape[0]} labels.")
    return z, _flatten_steps(_repeat_steps(labels, steps))


def class_batch(
    z: torch.Tensor, start_weights: torch.Tensor, end_weights: torch.Tensor, steps: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Build the generator batch of rows whose noise stays fixed and whose class weights blend.

    z: (rows, z_dim); start_weights, end_weights: float (rows, num_classes). Returns noise
    (rows * steps, z_dim) and class weights (rows * steps, num_classes), ordered row by row.
    """
    if z.dim() != 2 or z.shape[0] != start_weights.shape[0]:
        raise ValueError(
            f"Noise must have shape (rows, z_dim) with one row per weight row, got {tuple(z.shape)} "
            f"for {start_weights.shape[0]} weight rows."
        )
    weights = _flatten_steps(class_weight_path(start_weights, end_weights, steps))
    return _flatten_steps(_repeat_steps(z, steps)), weights
