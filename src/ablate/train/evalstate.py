"""No model state changes during an eval: every parameter and buffer, fingerprinted around it.

An eval must be a function of the weights and the windows it scores. A module that writes a
buffer in eval mode can remember what it saw (a prefix hash -> the next token) and recall it in a
later call: the periodic evals score the final eval's first windows, so the final eval would
"predict" tokens it was shown before. No probe sees that (each probe call is causal on its own).

The check is cheap (no copies): for every parameter and buffer, persistent or not, its name, the
tensor object (``id``), its storage (``data_ptr``), its shape and ``tensor._version``, the
counter torch bumps at every in-place write (``copy_``, ``+=``, ``index_put_``, an optimizer
step). Before and after an eval these must be equal, and so must the set of names: a module that
writes in place, replaces a buffer object or registers a new tensor is named in one line, and the
job ends ``leaked`` (train/trainer.py). What it cannot see: memory kept outside registered tensors
(a Python attribute holding a dict or a tensor, a global), which no check of the module's
registered state reaches.
"""

from __future__ import annotations

import torch

Fingerprint = dict[str, tuple[str, int, int, tuple[int, ...], int]]
"""name -> (kind, id, data_ptr, shape, _version)."""


def fingerprint(model: torch.nn.Module) -> Fingerprint:
    """Every parameter and buffer of ``model`` (tied ones under each name), no copy."""
    out: Fingerprint = {}
    tensors = [
        *(("parameter", n, t) for n, t in model.named_parameters(remove_duplicate=False)),
        *(("buffer", n, t) for n, t in model.named_buffers(remove_duplicate=False)),
    ]
    for kind, name, t in tensors:
        out[name] = (kind, id(t), t.data_ptr(), tuple(t.shape), t._version)
    return out


def change(before: Fingerprint, after: Fingerprint, when: str) -> str | None:
    """One line naming the first tensor that changed between two fingerprints, or None."""
    why = (
        "an eval may not change the model (state kept between calls can carry tokens of "
        "earlier windows into later ones)"
    )
    for name in sorted(set(before) | set(after)):
        b, a = before.get(name), after.get(name)
        if b == a:
            continue
        kind = (a or b)[0]  # type: ignore[index]  # one of them is set
        if b is None:
            what = "was registered"
        elif a is None:
            what = "was removed"
        elif a[1] != b[1]:
            what = "was replaced by another tensor object"
        elif a[2] != b[2] or a[3] != b[3]:
            what = f"was given other storage (shape {list(b[3])} -> {list(a[3])})"
        else:
            what = f"was written in place (its _version went from {b[4]} to {a[4]})"
        return f"model state changed during the {when}: {kind} '{name}' {what}; {why}"
    return None
