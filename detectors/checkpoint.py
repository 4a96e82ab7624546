"""Detector state as bytes and back, so a restarted service carries on where it stopped.

:func:`dump` walks an object graph — a detector with its per-caller maps, sketches, rings and
open window — and writes it as MessagePack (msgspec) with a small type tag per node; :func:`load`
rebuilds it. It is not pickle: :func:`load` builds only an allow-list of types (Python's own
containers and scalars, ``OrderedDict``, ``deque``, ``Counter``, ``datetime``, ``random.Random``
states, numpy arrays of plain dtypes, and classes defined in the ``inferwatch`` package, made with
``__new__`` and filled attribute by attribute: no constructor, ``__reduce__`` or ``__setstate__``
code runs), so a checkpoint read back from a shared store cannot run code. Anything else in the
graph (a function, a scikit-learn model, an open file) makes :func:`dump` raise
:class:`NotCheckpointable` naming where it is. A class lists such attributes, and caches it can
rebuild, in ``CHECKPOINT_SKIP``: they are not written and read back as ``None``; a restored
detector keeps its own as it was built, and its ``after_restore(built)`` takes back or rebuilds
the others (a store handle, a fitted model from its training rows).

Shared references and cycles are kept: an object or container met twice is written once and
referred to after that.

>>> from collections import OrderedDict
>>> shared = [1.5, "x"]
>>> again = load(dump({"a": shared, "b": shared, "c": OrderedDict(k=(1, None))}))
>>> again["a"] is again["b"], list(again["c"].items())
(True, [('k', (1, None))])
"""

from __future__ import annotations

import array
import enum
import gc
import hashlib
import inspect
import random
import sys
import types
from collections import Counter, OrderedDict, deque
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any, Final

import msgspec
import numpy as np
from pydantic import BaseModel

from inferwatch.collectors.event import InferenceEvent, decode_event, encode_event

__all__ = ["FORMAT", "CheckpointTooLarge", "NotCheckpointable", "built_fingerprint", "dump", "fingerprint",
           "load", "restore_into", "state_of"]

FORMAT: Final = 1
"""Version of the encoding; a checkpoint of another version is not read."""

# Node tags: a node is a scalar (None, bool, int within 64 bits, float, str) or [tag, ...].
_REF, _LIST, _TUPLE, _DICT, _SET, _FROZENSET, _ODICT, _DEQUE, _COUNTER = range(9)
_BYTES, _BIGINT, _DATETIME, _TIMEDELTA, _RANDOM, _ARRAY, _NPSCALAR, _OBJECT = range(9, 17)
_BYTEARRAY, _PYARRAY, _METHOD, _EVENT, _MODEL = range(17, 22)
_CONTAINERS: Final = frozenset({_LIST, _TUPLE, _DICT, _SET, _FROZENSET, _ODICT, _DEQUE, _COUNTER, _OBJECT})
_PYARRAY_CODES: Final = frozenset("bBhHiIlLqQfd")
_PLAIN_DTYPES: Final = frozenset("biufc?")  # numpy kinds with no Python objects inside
_PACKAGE: Final = "inferwatch."
_AS_IS: Final = frozenset({float, bool, type(None)})  # scalars written as they are, of no counted size
_STR: Final = frozenset({str})
_INT_AS_IS: Final = _AS_IS | {int}
_STATE_PACKAGE: Final = "inferwatch.detectors."
"""Where the classes a checkpoint may make are defined."""
_METHODS: Final[dict[type, frozenset[str]]] = {
    list: frozenset({"append", "extend"}), deque: frozenset({"append", "appendleft", "extend"}),
    set: frozenset({"add", "discard"}), dict: frozenset({"get", "pop", "setdefault"}),
}
"""The bound methods a state may keep (a hot loop's ``append = rows.append``), and nothing else."""
_REFUSED_BASES: Final = (enum.Enum, tuple, list, dict, set, frozenset, BaseException)


class NotCheckpointable(TypeError):
    """The object graph holds something :func:`dump` does not write; the message says where."""


class CheckpointTooLarge(ValueError):
    """The state is larger than :func:`dump` was allowed to write (it stops early, at that size)."""


@contextmanager
def _no_gc() -> Iterator[None]:
    """The cyclic garbage collector paused: writing or reading a state builds millions of small
    lists, each allocation counted towards a collection that walks them all again (two thirds of
    the time at 100,000 callers). Nothing made here needs it: what is dropped goes by refcount."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def dump(root: Any, *, max_bytes: int | None = None) -> bytes:
    """``root`` as bytes :func:`load` reads back (see the module docstring for what it takes);
    :class:`CheckpointTooLarge` as soon as it would take about more than ``max_bytes``."""
    try:
        with _no_gc():
            return msgspec.msgpack.encode([FORMAT, _Writer(max_bytes).node(root, "root")])
    except RecursionError:
        raise NotCheckpointable("the state is nested too deeply to write") from None


def load(data: bytes) -> Any:
    """The object graph :func:`dump` wrote; :class:`ValueError` when ``data`` is not one."""
    with _no_gc():
        return _load(data)


def _load(data: bytes) -> Any:
    try:
        decoded = msgspec.msgpack.decode(data)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise ValueError(f"not a checkpoint: {exc}") from None
    if not (isinstance(decoded, list) and len(decoded) == 2 and decoded[0] == FORMAT):
        raise ValueError(f"not a checkpoint of format {FORMAT}")
    try:
        return _Reader().node(decoded[1])
    except ValueError as exc:
        raise ValueError(f"not a checkpoint: {exc}") from None
    except (RecursionError, MemoryError):
        raise ValueError("not a checkpoint: nested too deeply") from None
    except Exception as exc:  # a malformed node: an index, a type, a number out of range
        raise ValueError(f"not a checkpoint: {type(exc).__name__}: {exc}") from None


def fingerprint(value: Any) -> str:
    """A short digest of ``value`` as :func:`dump` writes it (or of its ``repr`` when it cannot)."""
    try:
        raw = msgspec.msgpack.encode(_Writer(None, canonical=True).node(value, "root"))
    except (NotCheckpointable, RecursionError):
        raw = repr(value).encode()
    return hashlib.sha256(raw).hexdigest()[:16]


def built_fingerprint(detector: Any) -> str:
    """A detector as built: its options (its state before any event) and, when it declares one,
    its ``CHECKPOINT_VERSION``. A checkpoint is restored only into a detector with the same, so
    a detector that changes the layout of what it holds (a field added to its per-caller
    records, say) bumps its version, and a checkpoint from before starts it afresh rather than
    restoring records it cannot read."""
    state = state_of(detector)
    version = getattr(detector, "CHECKPOINT_VERSION", 0)
    return fingerprint([version, state] if version else state)  # version 0: as before versions


def state_of(detector: Any) -> dict[str, Any]:
    """A detector's attributes to checkpoint: all of them but its ``CHECKPOINT_SKIP``."""
    return _attributes(detector)


def restore_into(detector: Any, state: dict[str, Any]) -> None:
    """Set ``state`` (from :func:`state_of`) on a freshly built detector of the same class (its
    ``CHECKPOINT_SKIP`` attributes stay as built), then call its ``after_restore(built)``, if it
    has one, with its attributes as they were built: what was not written (a store handle deep
    inside, a fitted model) is taken back or rebuilt there."""
    built = dict(getattr(detector, "__dict__", {}))
    for name, value in state.items():
        object.__setattr__(detector, name, value)
    after = getattr(detector, "after_restore", None)
    if after is not None:
        after(built)


def _attributes(obj: Any) -> dict[str, Any]:
    skip = set(getattr(obj, "CHECKPOINT_SKIP", ()))
    out: dict[str, Any] = {k: v for k, v in getattr(obj, "__dict__", {}).items() if k not in skip}
    for cls in type(obj).__mro__:
        slots = getattr(cls, "__slots__", ())
        for name in (slots,) if isinstance(slots, str) else slots:
            if name.startswith("__") and not name.endswith("__"):
                name = f"_{cls.__name__.lstrip('_')}{name}"  # a private slot is stored mangled
            if name not in ("__dict__", "__weakref__") and name not in skip and hasattr(obj, name):
                out[name] = getattr(obj, name)
    return out


class _Writer:
    """Writes the graph; ``where`` is a path built lazily, ``(parent, step)``, named only on errors."""

    def __init__(self, max_bytes: int | None, canonical: bool = False) -> None:
        self.canonical = canonical  # sets in a fixed order (for fingerprints: set order varies by run)
        self.seen: dict[int, int] = {}
        self.alive: list[Any] = []  # keeps ids stable while writing
        self.max_bytes = max_bytes
        self.size = 0  # about what the encoding will take
        self.open: set[int] = set()  # tuples, frozensets and methods being written (made after their items)

    def node(self, value: Any, where: Any) -> Any:
        kind = type(value)
        if kind is str:
            self.size += len(value) + 1
            return value
        if value is None or kind is bool or kind is float:
            return value
        if kind is int:
            return value if -(2**63) <= value < 2**64 else [_BIGINT, str(value)]
        ref = self.seen.get(id(value))
        if ref is not None:
            if id(value) in self.open:
                raise NotCheckpointable(f"{_path(where)}: a cycle through a {kind.__name__}, which is made "
                                        "after what it holds")
            return [_REF, ref]
        self.seen[id(value)] = len(self.seen)
        self.alive.append(value)
        self.size += 4
        if self.max_bytes is not None and self.size > self.max_bytes:
            raise CheckpointTooLarge(f"over {self.max_bytes:,} bytes at {_path(where)}")
        return self._compound(value, kind, where)

    def _items(self, values: Any, where: Any) -> list[Any]:
        if self._all_scalars(values, where):
            return list(values)
        node = self.node
        return [node(v, (where, i)) for i, v in enumerate(values)]

    def _all_scalars(self, values: Any, where: Any) -> bool:
        """Whether every item of ``values`` is a node as it stands (and its size counted): the
        common runs of strings, of 64-bit ints or of floats are then written without a call each."""
        kinds = set(map(type, values))
        if not kinds or kinds <= _AS_IS:
            return True
        if kinds == _STR:
            self.size += sum(map(len, values)) + len(values)
            if self.max_bytes is not None and self.size > self.max_bytes:
                raise CheckpointTooLarge(f"over {self.max_bytes:,} bytes at {_path(where)}")
            return True
        if kinds <= _INT_AS_IS:
            ints = [v for v in values if type(v) is int]
            return not ints or (min(ints) >= -(2**63) and max(ints) < 2**64)
        return False

    def _compound(self, value: Any, kind: type, where: Any) -> Any:
        if kind is list:
            return [_LIST, self._items(value, where)]
        if kind is tuple or kind is frozenset:
            self.open.add(id(value))
            try:
                return [_TUPLE if kind is tuple else _FROZENSET, self._items(value, where)]
            finally:
                self.open.discard(id(value))
        if kind in (dict, OrderedDict, Counter):
            tag = {dict: _DICT, OrderedDict: _ODICT, Counter: _COUNTER}[kind]
            node = self.node
            if self._all_scalars(value.keys(), where):
                if self._all_scalars(value.values(), where):
                    return [tag, [[k, v] for k, v in value.items()]]
                return [tag, [[k, node(v, (where, k))] for k, v in value.items()]]
            return [tag, [[node(k, (where, "key")), node(v, (where, k))] for k, v in value.items()]]
        if kind is set:
            return [_SET, self._items(sorted(value, key=repr) if self.canonical else value, where)]
        if kind is deque:
            return [_DEQUE, value.maxlen, self._items(value, where)]
        return self._leaf(value, kind, where)

    def _leaf(self, value: Any, kind: type, where: Any) -> Any:
        if kind in (bytes, bytearray, array.array, np.ndarray):
            self.size += value.nbytes if kind is np.ndarray else len(value) * getattr(value, "itemsize", 1)
        if kind is bytes:
            return [_BYTES, value]
        if kind is bytearray:
            return [_BYTEARRAY, bytes(value)]
        if kind is array.array:
            if value.typecode not in _PYARRAY_CODES:
                raise NotCheckpointable(f"{_path(where)}: an array of type code {value.typecode!r}")
            return [_PYARRAY, value.typecode, value.tobytes()]
        if kind in (types.BuiltinMethodType, types.MethodType):  # kept bound for speed, or a callback
            owner, name = value.__self__, value.__name__
            if not _bindable(owner, name):
                raise NotCheckpointable(f"{_path(where)}: a bound method {name!r} of a "
                                        f"{type(owner).__name__}")
            self.open.add(id(value))
            try:
                return [_METHOD, self.node(owner, (where, "__self__")), name]
            finally:
                self.open.discard(id(value))
        if kind is datetime:
            return [_DATETIME, value.isoformat()]
        if kind is timedelta:
            return [_TIMEDELTA, value.total_seconds()]
        if kind is random.Random:
            version, internal, gauss = value.getstate()
            return [_RANDOM, version, list(internal), gauss]
        if kind is np.ndarray:
            if value.dtype.kind not in _PLAIN_DTYPES:
                raise NotCheckpointable(f"{_path(where)}: a numpy array of dtype {value.dtype}")
            return [_ARRAY, value.dtype.str, list(value.shape), np.ascontiguousarray(value).tobytes()]
        if isinstance(value, np.generic) and value.dtype.kind in _PLAIN_DTYPES:
            return [_NPSCALAR, value.dtype.str, value.tobytes()]
        if kind is InferenceEvent:  # held in open windows' samples: written as the bus carries it
            return [_EVENT, encode_event(value)]
        if isinstance(value, BaseModel) and kind.__module__.startswith(_STATE_PACKAGE):
            return [_MODEL, f"{kind.__module__}:{kind.__qualname__}", value.model_dump_json().encode()]
        module = getattr(kind, "__module__", "")
        if (not module.startswith(_STATE_PACKAGE) or isinstance(value, (type, *_REFUSED_BASES))
                or callable(value) or not _plain(kind)):
            raise NotCheckpointable(f"{_path(where)}: a {module}.{kind.__qualname__} is not checkpointed")
        node = self.node
        return [_OBJECT, f"{module}:{kind.__qualname__}",
                [[name, node(v, (where, "." + name))] for name, v in _attributes(value).items()]]


def _path(where: Any) -> str:
    """``root['f'].x[3]`` from the lazy path ``(((("root", 'f'), ".x"), 3)``."""
    steps = []
    while isinstance(where, tuple):
        where, step = where
        steps.append(step if isinstance(step, str) and step.startswith(".") else
                     f" {step}" if step == "key" else f"[{step!r}]")
    return str(where) + "".join(reversed(steps))


class _Reader:
    def __init__(self) -> None:
        self.made: list[Any] = []

    def node(self, raw: Any) -> Any:
        if not isinstance(raw, list):
            return raw
        tag = raw[0]
        if tag == _REF:
            return self.made[raw[1]]
        if tag == _BIGINT:
            return int(raw[1])
        return self._compound(tag, raw)

    def _keep(self, value: Any) -> Any:
        self.made.append(value)
        return value

    def _compound(self, tag: int, raw: list[Any]) -> Any:
        held = raw[2] if tag in (_DEQUE, _OBJECT) else raw[1] if tag in _CONTAINERS else None
        if tag in _CONTAINERS and not isinstance(held, list):
            raise ValueError(f"a checkpoint node of kind {tag} holds no list")
        # Containers are registered before their items are read, so that a cycle finds them.
        if tag == _LIST:
            out: list[Any] = self._keep([])
            out.extend(self.node(v) for v in raw[1])
            return out
        if tag == _TUPLE:
            slot = len(self.made)
            self.made.append(None)  # a tuple is made after its items (none of them can be it)
            made = tuple(self.node(v) for v in raw[1])
            self.made[slot] = made
            return made
        if tag in (_DICT, _ODICT, _COUNTER):
            mapping: dict[Any, Any] = self._keep({_DICT: dict, _ODICT: OrderedDict, _COUNTER: Counter}[tag]())
            for k, v in raw[1]:
                key = self.node(k)
                mapping[key] = self.node(v)
            return mapping
        if tag == _SET:
            items: set[Any] = self._keep(set())
            items.update(self.node(v) for v in raw[1])
            return items
        if tag == _FROZENSET:
            slot = len(self.made)
            self.made.append(None)
            frozen = frozenset(self.node(v) for v in raw[1])
            self.made[slot] = frozen
            return frozen
        if tag == _DEQUE:
            ring: deque[Any] = self._keep(deque(maxlen=raw[1]))
            ring.extend(self.node(v) for v in raw[2])
            return ring
        return self._value(tag, raw)

    def _value(self, tag: int, raw: list[Any]) -> Any:
        if tag == _BYTES:
            return self._keep(bytes(raw[1]))
        if tag == _EVENT:
            return self._keep(decode_event(bytes(raw[1])))
        if tag == _MODEL:  # a pydantic model of ours (a Finding held back): validated as it is read
            cls = _class(raw[1], model=True)
            return self._keep(cls.model_validate_json(bytes(raw[2])))
        if tag == _BYTEARRAY:
            return self._keep(bytearray(raw[1]))
        if tag == _PYARRAY:
            if raw[1] not in _PYARRAY_CODES:
                raise ValueError(f"a checkpoint holds an array of type code {raw[1]!r}")
            numbers = array.array(raw[1])
            numbers.frombytes(raw[2])
            return self._keep(numbers)
        if tag == _METHOD:
            slot = len(self.made)
            self.made.append(None)
            owner = self.node(raw[1])
            name = raw[2]
            if not (isinstance(name, str) and _bindable(owner, name)):
                raise ValueError(f"a checkpoint names a method {name!r} of a {type(owner).__name__}")
            method = getattr(owner, name)
            self.made[slot] = method
            return method
        if tag == _DATETIME:
            return self._keep(datetime.fromisoformat(raw[1]))
        if tag == _TIMEDELTA:
            return self._keep(timedelta(seconds=raw[1]))
        if tag == _RANDOM:
            rng = random.Random()
            rng.setstate((raw[1], tuple(raw[2]), raw[3]))
            return self._keep(rng)
        if tag == _ARRAY:
            dtype = np.dtype(raw[1])
            if dtype.kind not in _PLAIN_DTYPES:
                raise ValueError(f"a checkpoint holds a numpy array of dtype {dtype}")
            values = np.frombuffer(raw[3], dtype=dtype).reshape(raw[2]).copy()
            return self._keep(values)
        if tag == _NPSCALAR:
            dtype = np.dtype(raw[1])
            if dtype.kind not in _PLAIN_DTYPES:
                raise ValueError(f"a checkpoint holds a numpy scalar of dtype {dtype}")
            return self._keep(np.frombuffer(raw[2], dtype=dtype)[0])
        if tag == _OBJECT:
            cls = _class(raw[1])
            obj = self._keep(object.__new__(cls))
            for name in getattr(cls, "CHECKPOINT_SKIP", ()):  # not written: None until rebuilt
                object.__setattr__(obj, name, None)
            for name, value in raw[2]:
                if not (isinstance(name, str) and _settable(cls, name)):
                    raise ValueError(f"a checkpoint sets {name!r} on a {cls.__qualname__}")
                object.__setattr__(obj, name, self.node(value))
            return obj
        raise ValueError(f"a checkpoint node of unknown kind {tag}")


def _class(name: str, *, model: bool = False) -> Any:
    """The class ``module:qualname`` names: one defined in an ``inferwatch.detectors`` module that
    is already imported (nothing is imported here), found without passing through another module,
    with no ``__del__``, no ``__new__`` of its own and no enum or builtin-container base: what
    :meth:`_Reader._value` then does to it (``object.__new__``, setting plain attributes) runs no
    code of anybody's."""
    module_name, _, qualname = name.partition(":")
    module = sys.modules.get(module_name) if module_name.startswith(_STATE_PACKAGE) else None
    if module is None:
        raise ValueError(f"a checkpoint names {name!r}, not a class of a loaded inferwatch.detectors module")
    found: Any = module
    for part in qualname.split("."):
        if not part.isidentifier() or part.startswith("__"):
            raise ValueError(f"a checkpoint names {name!r}: {part!r} is not a class name")
        found = getattr(found, part, None)
        if not isinstance(found, type):
            raise ValueError(f"a checkpoint names {name!r}, which is not a class")
    if found.__module__ != module_name or found.__qualname__ != qualname:
        raise ValueError(f"a checkpoint names {name!r}, which is defined elsewhere")
    if model:
        if not issubclass(found, BaseModel):
            raise ValueError(f"a checkpoint names {name!r} as a model, which it is not")
        return found
    if issubclass(found, BaseModel) or issubclass(found, _REFUSED_BASES) or not _plain(found):
        raise ValueError(f"a checkpoint names {name!r}, a class not made from a checkpoint")
    return found


def _plain(cls: type) -> bool:
    """No ``__new__`` or ``__del__`` of its own or inherited: made and dropped without running code."""
    return not any("__new__" in vars(c) or "__del__" in vars(c) for c in cls.__mro__ if c is not object)


def _bindable(owner: Any, name: str) -> bool:
    """Whether ``owner.name`` may be kept bound: a container method of :data:`_METHODS`, or a plain
    method (a function on the class, not a dunder) of an object of ``inferwatch.detectors``."""
    if name in _METHODS.get(type(owner), ()):
        return True
    cls = type(owner)
    return (cls.__module__.startswith(_STATE_PACKAGE) and name.isidentifier() and not name.startswith("__")
            and isinstance(inspect.getattr_static(cls, name, None), types.FunctionType))


def _settable(cls: type, name: str) -> bool:
    """Whether setting ``name`` on an instance of ``cls`` stores it and nothing else: not a dunder,
    and no descriptor of the class (a property's setter, say) in the way, bar a slot."""
    if not name.isidentifier() or (name.startswith("__") and name.endswith("__")):
        return False
    attribute = inspect.getattr_static(cls, name, None)
    return attribute is None or isinstance(attribute, types.MemberDescriptorType) or not (
        hasattr(type(attribute), "__set__") or hasattr(type(attribute), "__get__"))
