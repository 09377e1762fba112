"""Learning-rate schedules as pure functions of the position in a run.

Each schedule maps ``(iteration, num_iterations)`` (0-based iteration) to a multiplier of
the base learning rate; :func:`make_schedule` binds a schedule's options. The Solver sets
``learning_rate = multiplier * base`` before every update.
"""

import math

SCHEDULES = ("step", "cosine", "onecycle")


def cosine(iteration, num_iterations):
    """Cosine decay from 1 to 0 over the run."""
    return 0.5 * (1 + math.cos(math.pi * iteration / max(num_iterations, 1)))


def step(iteration, num_iterations, every, gamma=0.1):
    """Multiply by ``gamma`` every ``every`` iterations."""
    return gamma ** (iteration // every)


def onecycle(iteration, num_iterations, warmup_frac=0.3):
    """Linear warm-up from 1/25 over the first ``warmup_frac`` of the run, then cosine
    annealing to 1e-4 (Smith's one-cycle policy)."""
    progress = iteration / max(num_iterations, 1)
    if progress < warmup_frac:
        return 1 / 25 + (1 - 1 / 25) * progress / warmup_frac
    tail = (progress - warmup_frac) / (1 - warmup_frac)
    return 1e-4 + (1 - 1e-4) * 0.5 * (1 + math.cos(math.pi * tail))


def make_schedule(name, num_epochs, iterations_per_epoch, step_epochs=None, step_gamma=0.1,
                  warmup_frac=0.3):
    """The schedule ``name`` (one of SCHEDULES) as ``f(iteration, num_iterations)``.

    'step' multiplies by ``step_gamma`` every ``step_epochs`` epochs (default a third of the
    run); 'onecycle' warms up over ``warmup_frac`` of the run.
    """
    if name == "cosine":
        return cosine
    if name == "step":
        every = (step_epochs or max(num_epochs // 3, 1)) * iterations_per_epoch
        return lambda iteration, total: step(iteration, total, every, step_gamma)
    if name == "onecycle":
        return lambda iteration, total: onecycle(iteration, total, warmup_frac)
    raise ValueError(f"lr_schedule must be one of {', '.join(SCHEDULES)}, got {name!r}")
