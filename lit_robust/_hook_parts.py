"""A base class's part of a Lightning hook that runs once per call even where a subclass's own hook skips ``super()``.

Lightning's docs write ``on_save_checkpoint``/``on_load_checkpoint`` without ``super()``, so a base class that saves
the random state there (``RobustMixin``, ``SimCLR``) lost it under such a subclass. The base's ``__init_subclass__``
calls :func:`guarantee_parts`; the base's own hook runs its part through :func:`run_part`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

#: ``(id(module), part) -> whether the part ran``, for the hook calls under way. Kept out of the module's
#: ``__dict__``: a copy or pickle of the module made inside a hook carried the mark of that call, and the copy's own
#: hooks then never ran the part.
_UNDER_WAY: dict[tuple[int, Callable[..., Any]], bool] = {}


def run_part(module: Any, part: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run ``part(module, ...)``, noting for the outermost wrapper of this hook call that it ran."""
    key = (id(module), part)
    if key in _UNDER_WAY:
        _UNDER_WAY[key] = True
    return part(module, *args, **kwargs)


def guarantee_parts(cls: type, base: type, parts: Mapping[str, Callable[..., Any]]) -> None:
    """From ``base.__init_subclass__``: make each hook ``name`` of ``cls`` run ``parts[name]`` once per call, after
    the hook, where the hook did not reach it through ``super()``.

    The hook wrapped is ``cls``'s own, or one ``cls`` takes from a class that is not a ``base`` (a user's mixin listed
    before ``base``); those of ``base``'s other subclasses are wrapped already.
    """
    for name, part in parts.items():
        owner = next(c for c in cls.__mro__ if name in c.__dict__)
        hook = owner.__dict__[name]
        if owner is base or (owner is not cls and issubclass(owner, base)) or not callable(hook):
            continue
        if part in getattr(hook, "_robust_parts", ()):
            continue
        setattr(cls, name, _with_part(hook, part))


def _with_part(hook: Callable[..., Any], part: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(hook)
    def run(self: Any, *args: Any, **kwargs: Any) -> Any:
        key = (id(self), part)
        if key in _UNDER_WAY:  # an override further up, reached by `super()` from the one being run
            return hook(self, *args, **kwargs)
        _UNDER_WAY[key] = False
        try:
            result = hook(self, *args, **kwargs)
            if not _UNDER_WAY[key]:
                part(self, *args, **kwargs)
        finally:
            del _UNDER_WAY[key]
        return result

    run._robust_parts = (*getattr(hook, "_robust_parts", ()), part)  # type: ignore[attr-defined]
    return run
