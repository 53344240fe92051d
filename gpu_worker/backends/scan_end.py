"""Whether a baseline JPEG's image data ends where an MCU ends: the check for a scan cut inside its last MCU.

A decoder that runs out of image data inside an MCU decodes the missing bits as zeros: that MCU comes out wrong, and
DALI's decoders say nothing (libvips refuses the file). The file's structure cannot tell (an end-of-image marker may
follow the cut), nor can the decoded pixels (`damage.grey_filled` finds only whole MCUs left without coefficients).
An encoder ends a scan with the last MCU's last code and at most 7 one-bits to fill the byte; a parse of a cut scan
runs out of bits inside an MCU.

Only the scan's last bytes are parsed: parsing a whole scan is most of a decode (a 12 MP photo's takes tens of
milliseconds of host time, what the GPU is there to save). Where in the code the tail starts is not known, so the
parse starts in every state it could be in there (each of the first 32 bits, as no symbol takes more than 31; each
block of the MCU; each coefficient) and all of them run to the end: the true parse is one of them. Huffman codes
resynchronise within a few symbols, so the parses merge (a state that two reach is followed once); where some still
disagree at the end, a longer tail is parsed, up to the whole scan, whose start is known. The parses read code
lengths only (values, DC prediction included, do not change where the next code starts).

A flat area (a white background) codes every MCU alike: its bytes repeat, and parses out of step with each other
stay so through it, however long. There the parse starts before the repeating run and, once a parse is back in a
state it was in one period of the run earlier, skips whole cycles to the run's end.

The work is bounded (`_BUDGET`): data that keeps the parses apart (noise) is left undecided, never parsed at length.

A sound end also gives the last MCU's values (`ScanEnd.last`, for `last_mcu`): where it began is followed in the
last 1024 bits, and a parse that joins another there must agree where their MCU began (`_clash`), else it is not
known.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

_WINDOW = 16  # bits: the longest Huffman code
_SPREAD = 32  # bits of the tail's start tried: a symbol (code and extra bits) is at most 16 + 15 bits
_BLOCK = 64  # coefficients of an 8x8 block
_PADDING = 7  # one-bits that may fill the last byte
_ZRL, _EOB = 0xF0, 0x00  # AC symbols: sixteen zeros; end of block
# The natural (row-major) index of each coefficient in the order a block codes them (T.81 figure A.6).
ZIGZAG = np.array(
    [0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20, 13, 6, 7, 14, 21]
    + [28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59, 52, 45, 38, 31, 39, 46, 53, 60, 61]
    + [54, 47, 55, 62, 63]
)
_SCALAR = 64  # parses left when following each in turn beats stepping them together
_LATE = 1024  # bits before the end from which parses follow where their MCUs began
_DENSE = 2048 + _SPREAD  # bits at a tail's start where parses step together (states seen: an array, not a set)
_BUDGET = 20_000_000, 60_000  # states stepped together, symbols read one parse at a time: ~50 ms at most each
_LONGEST_PERIOD = 64  # bytes of a repeating run's period looked for
_END = 4  # bytes at the end not expected to repeat (the last MCU, the fill)
FIRST_TAIL = 256  # bytes parsed first; each retry parses four times as many (measured: benchmarks.damage_cost)
LONGEST_TAIL = 4096  # beyond it (and short of the whole scan, or a repeating run) the check gives up


def huffman_table(counts: bytes, symbols: bytes, ac: bool) -> np.ndarray | None:
    """A DHT table as the move each value of the next 16 bits makes: `advance | step << 8 | symbol << 16`, where
    `advance` is the bits the symbol they start with takes (its code and the value's bits; 0 where they start none)
    and `step` the coefficients it moves the block on (a DC symbol 1; an AC one its zeros and one, 16 for sixteen
    zeros, `_BLOCK` for the end of the block). None for a table whose codes do not fit in 16 bits (no decoder
    accepts it)."""
    lengths = np.repeat(np.arange(1, _WINDOW + 1), np.frombuffer(counts, np.uint8))
    values = np.frombuffer(symbols, np.uint8).astype(np.int32)
    if not len(lengths) or len(lengths) != len(values):
        return None
    spans = 1 << (_WINDOW - lengths)
    covered = int(spans.sum())
    if covered > 1 << _WINDOW:
        return None
    if ac:
        advance = lengths + (values & 15)
        step = np.where(values == _EOB, _BLOCK, np.where(values == _ZRL, 16, (values >> 4) + 1))
    else:
        advance = np.where(values > 15, 0, lengths + values)  # a DC difference has at most 15 bits
        step = np.ones_like(values)
    table = np.zeros(1 << _WINDOW, np.int32)
    # Canonical codes, left-aligned to 16 bits, cover [0, covered) in the order they are listed.
    table[:covered] = np.repeat(advance | step << 8 | values << 16, spans)
    return table


def huffman_tables(dht: bytes) -> dict[tuple[int, int], np.ndarray | None]:
    """The tables a DHT segment defines, by (class: 0 DC, 1 AC; destination)."""
    tables, at = {}, 0
    while at + 17 <= len(dht):
        count = sum(dht[at + 1 : at + 17])
        counts, symbols = dht[at + 1 : at + 17], dht[at + 17 : at + 17 + count]
        tables[dht[at] >> 4, dht[at] & 15] = huffman_table(counts, symbols, ac=dht[at] >> 4 == 1)
        at += 17 + count
    return tables


@dataclass(frozen=True)
class ScanCoding:
    """How one scan is coded: for each block of an MCU, in order, the row of `tables` its DC and its AC codes use."""

    tables: np.ndarray  # (tables, 65536) from `huffman_table`
    dc: tuple[int, ...]
    ac: tuple[int, ...]
    lead: int = 1  # the MCU's first blocks, of the scan's first component (`lead_id`), in raster order
    lead_id: int = 0

    @functools.cached_property
    def dc_rows(self) -> np.ndarray:
        return np.array(self.dc)

    @functools.cached_property
    def ac_rows(self) -> np.ndarray:
        return np.array(self.ac)

    @classmethod
    def of(
        cls, sos: bytes, factors: dict[int, tuple[int, int]], tables: dict[tuple[int, int], np.ndarray | None]
    ) -> ScanCoding | None:
        """From a start-of-scan segment, each component's sampling factors (by id, from the frame) and the tables
        defined before it; None where the scan names a component or table that is not there."""
        count = sos[0] if sos else 0
        if not count or len(sos) < 1 + 2 * count:
            return None
        rows: dict[tuple[int, int], int] = {}
        dc: list[int] = []
        ac: list[int] = []
        for n in range(count):
            component, selectors = sos[1 + 2 * n], sos[2 + 2 * n]
            dc_table, ac_table = (0, selectors >> 4), (1, selectors & 15)
            if component not in factors or tables.get(dc_table) is None or tables.get(ac_table) is None:
                return None
            h, v = factors[component] if count > 1 else (1, 1)  # a scan of one component: an MCU is one block
            dc += [rows.setdefault(dc_table, len(rows))] * (h * v)
            ac += [rows.setdefault(ac_table, len(rows))] * (h * v)
        lead = factors[sos[1]][0] * factors[sos[1]][1] if count > 1 else 1
        return cls(np.stack([tables[key] for key in rows]), tuple(dc), tuple(ac), lead, sos[1])


@dataclass(frozen=True)
class ScanEnd:
    """How a scan ends: `cut` (True: short of its last MCU's end; None: undecided) and, where it is not cut and
    one MCU is last whichever parse is followed, that MCU's blocks of the lead component as coded (`ZIGZAG` undone;
    quantised; a DC as the difference from the block before), for the decoded pixels to be held against."""

    cut: bool | None
    last: np.ndarray | None = None  # (coding.lead, 64)


def read_end(data: bytes, start: int, end: int, coding: ScanCoding, mcus: int, tail: int = FIRST_TAIL) -> ScanEnd:
    """How the image data `data[start:end]` (stuffed, with no restart marker in it), which should code `mcus` MCUs,
    ends. Where only a tail was parsed, a cut that ends exactly where an earlier MCU does passes (no count is known
    there): its last MCU then decodes from zero bits or, with more lost, grey, which the decoded pixels show (`last`,
    `damage.grey_filled`). `tail`: the bytes parsed first."""
    while True:
        at = max(start, end - tail)
        if at > start and data[at - 1] == 0xFF:  # a stuffed zero is not a byte of code
            at += 1
        code = _code(data[at:end])
        ended = _Tail(code, coding).end(mcus if at == start else None)
        if at == start or ended.cut or ended.last is not None:
            return ended  # exact; cut; or sound, its last MCU known
        if ended.cut is None and (tail >= LONGEST_TAIL or (run := _repeating_run(code)) is not None and run[0] == 0):
            return _after_run(data, start, end, coding, mcus)  # undecided: a run no longer tail would settle?
        if tail >= LONGEST_TAIL or (ended.cut is False and tail > FIRST_TAIL):
            return ended
        tail *= 4  # undecided; or sound, but parses that joined in its last MCU disagree where it began (once)


def _after_run(data: bytes, start: int, end: int, coding: ScanCoding, mcus: int) -> ScanEnd:
    """How image data that ends in a run of repeating bytes (a flat area) ends: parsed from before the run."""
    code = _code(data[start:end])
    run = _repeating_run(code)
    if run is None:
        return ScanEnd(None)
    first, period = run
    at = max(0, first - FIRST_TAIL)
    repeat = (first - at) * 8, period * 8, (len(code) - _END - at) * 8
    return _Tail(code[at:], coding, repeat).end(mcus if at == 0 else None)


def _code(stuffed: bytes) -> bytes:
    """Image data as code: without fill bytes before the marker that ends it, nor the zero stuffed after each 0xFF."""
    return stuffed.rstrip(b"\xff").replace(b"\xff\x00", b"\xff")


def _repeating_run(code: bytes) -> tuple[int, int] | None:
    """(first byte, period in bytes) of the run of repeating bytes that ends the code (but for its last few), or
    None: what a flat area codes."""
    body = np.frombuffer(code, np.uint8)[:-_END]
    for period in range(1, _LONGEST_PERIOD + 1):
        if len(body) >= 4 * period and np.array_equal(body[-3 * period :], body[-4 * period : -period]):
            differs = np.flatnonzero(body[period:] != body[:-period])
            return (int(differs[-1]) + 1 if len(differs) else 0), period
    return None


class _OverBudget(Exception):
    pass


def _clash(owner, began):
    """Whether two parses that reached the same state (arrays, or ints) disagree where its MCU began: each holds
    where, or, if it has seen no MCU start since it started at `p`, `-p - 2` (it agrees with an MCU that began
    before `p`; two such agree)."""
    if isinstance(owner, int) and isinstance(began, int):  # one parse's (numpy would take 100 times as long)
        if owner >= 0 and began >= 0:
            return owner != began
        return owner > -began - 2 if owner >= 0 else began > -owner - 2 if began >= 0 else False
    known_owner, known = owner >= 0, began >= 0
    return np.where(
        known_owner & known, owner != began, np.where(known_owner, owner > -began - 2, known & (began > -owner - 2))
    )


class _Tail:
    """The parses of some image data (code: no stuffing) to its end. A parse's state is one int, `_key`: its
    position in bits, the block of the MCU and the coefficient of the block it is at."""

    def __init__(self, code: bytes, coding: ScanCoding, repeat: tuple[int, int, int] | None = None) -> None:
        self.bits = len(code) * 8
        b = np.frombuffer(code + bytes(4), np.uint8).astype(np.int64)
        self.words = (b[:-3] << 24) | (b[1:-2] << 16) | (b[2:-1] << 8) | b[3:]  # 32 bits from each byte
        self.coding = coding
        self.blocks = len(coding.dc)
        self.repeat = repeat  # (first bit, period, end) in bits of a repeating run, for `_follow` to skip
        # The states some parse has been in, each with where its MCU began by the first parse there (`_clash`; at an
        # MCU's start, where the one before began):
        # over the first bits, where the parses step together, arrays (`slots` picks one of each state stepped
        # together); beyond, a dict.
        self.dense = min(self.bits + _SPREAD, _DENSE)
        size = self._key(self.dense + 1, 0, 0)
        self.seen_array = np.zeros(size, np.uint8)
        self.seen_near = memoryview(self.seen_array)
        self.owners = np.empty(size, np.int32)
        self.far_owners: dict[int, int] = {}
        self.unsure = -1  # the last position where two parses that merged disagree where their MCU began
        self.slots = np.empty(size, np.int32)
        self.stepped, self.read = 0, 0
        self.last_starts: set[int] = set()  # where the last MCU starts (< 0: not seen), by each parse ending sound

    def _key(self, p, block, k):
        return (p * self.blocks + block) * _BLOCK + k

    def end(self, mcus: int | None) -> ScanEnd:
        """How the data ends, by the parse from its first bit at an MCU's start where it is the whole scan or
        interval, which codes `mcus` MCUs, else by every parse from each state it could be in there (undecided where
        those disagree, or the work would go over budget; cut where every parse fails)."""
        found: set[bool] = set()
        try:
            if mcus is not None:
                self._follow(0, found, mcus)
            else:
                self._every(found)
        except _OverBudget:
            return ScanEnd(None)
        if found != {False}:
            return ScanEnd(None if len(found) > 1 else True)
        (start,) = self.last_starts if len(self.last_starts) == 1 else (-1,)
        if start < 0 or start <= self.unsure:  # the parse that ended may have joined the true one in that MCU
            return ScanEnd(False)
        return ScanEnd(False, self._blocks(start, self.coding.lead))

    def _blocks(self, p: int, count: int) -> np.ndarray | None:
        """`count` blocks' coefficients as coded from bit `p` (an MCU's start), or None where they do not read."""
        words, lookups = self.word_list, self.lookups
        out = np.zeros((count, _BLOCK))
        for block in range(count):
            k = 0
            while k < _BLOCK:
                window = (words[p >> 3] >> (16 - (p & 7))) & 0xFFFF
                move = lookups[2 * block + (k > 0)][window]
                advance, step, symbol = move & 0xFF, (move >> 8) & 0xFF, move >> 16
                size = symbol & 15 if k else symbol
                if not advance or p + advance > self.bits:
                    return None
                at = p + advance - size  # the value's bits follow the code
                bits = (words[at >> 3] >> (32 - (at & 7) - size)) & ((1 << size) - 1)
                if size:  # a value of `size` bits whose first bit is 0 is negative (T.81 F.2.2.1, EXTEND)
                    value = bits if bits >> (size - 1) else bits - (1 << size) + 1
                    out[block, ZIGZAG[k + step - 1 if k else 0]] = value
                p += advance
                k += step
        return out

    def _every(self, found: set[bool]) -> None:
        keys = np.arange(self._key(_SPREAD, 0, 0))  # every state of the first 32 bits
        # Far from the end, where no last MCU begins that `LastMcu` would be asked about, where MCUs began is not
        # followed: a last MCU that began before `unsure` is not known.
        late = self._key(min(self.dense, self.bits) - _LATE, 0, 0)
        while len(keys) > _SCALAR and keys.max() < late:
            keys = self._sync(keys)
        self.unsure = max(self.unsure, int(keys.max()) // (self.blocks * _BLOCK) if len(keys) else -1)
        at = keys // (self.blocks * _BLOCK)
        # Each parse: its state, where its MCU began (`_clash`) and where the one before began (-1: not seen).
        parses = np.stack([keys, np.where(keys % (self.blocks * _BLOCK) == 0, at, -at - 2), np.full(len(keys), -1)])
        while parses.shape[1] > _SCALAR and parses[0].max() < self._key(self.dense - _SPREAD, 0, 0):
            parses = self._step(parses, found)
        for key, began, last in parses.T.tolist():
            self._follow(key, found, began=began, last=last)

    @functools.cached_property
    def word_list(self) -> list[int]:
        return self.words.tolist()

    @functools.cached_property
    def lookups(self) -> list[memoryview]:
        """Each block's DC and AC tables (at 2 * block and 2 * block + 1), read an int at a time."""
        tables = self.coding.tables
        return [tables[row].data for pair in zip(self.coding.dc, self.coding.ac, strict=True) for row in pair]

    def _moves(self, keys: np.ndarray) -> tuple[np.ndarray, ...]:
        """The states `keys` as (position, block, coefficient), the 16 bits at each position, and the move the
        symbol there makes (`huffman_table`: the bits it takes, the coefficients it moves on)."""
        k, position = keys % _BLOCK, keys // _BLOCK
        block, p = position % self.blocks, position // self.blocks
        window = (self.words[p >> 3] >> (16 - (p & 7))) & 0xFFFF
        move = self.coding.tables[np.where(k == 0, self.coding.dc_rows[block], self.coding.ac_rows[block]), window]
        return p, block, k, window, move & 0xFF, (move >> 8) & 0xFF

    def _sync(self, keys: np.ndarray) -> np.ndarray:
        """Every state one symbol on, those seen before dropped (`_step` without where MCUs began: far from the end,
        where none reaches it)."""
        self.stepped += len(keys)
        if self.stepped > _BUDGET[0]:
            raise _OverBudget
        order = np.arange(len(keys), dtype=np.int32)
        self.slots[keys] = order
        keys = keys[(self.slots[keys] == order) & (self.seen_array[keys] == 0)]  # one of each, not seen before
        self.seen_array[keys] = 1
        p, block, k, _, advance, step = self._moves(keys)
        k = k + step
        done = (k == _BLOCK) | (step == _BLOCK)
        block = block + done
        key = self._key(p + advance, np.where(block == self.blocks, 0, block), np.where(done, 0, k))
        return key[(advance > 0) & ((k < _BLOCK) | done)]

    def _step(self, parses: np.ndarray, found: set[bool]) -> np.ndarray:
        """Every parse (`_every`) one symbol on, those in a state seen before dropped; the verdicts of those that
        reach the end (`_follow`, many at once)."""
        self.stepped += parses.shape[1]
        if self.stepped > _BUDGET[0]:
            raise _OverBudget
        keys = parses[0]
        order = np.arange(len(keys), dtype=np.int32)
        self.slots[keys] = order
        first = self.slots[keys]
        seen = self.seen_array[keys] == 1
        keep = (first == order) & ~seen  # one of each, not seen before
        # At an MCU's start every parse began it there: what they may disagree on is where the one before began.
        mark = np.where(keys % (self.blocks * _BLOCK) == 0, parses[2], parses[1])
        if not keep.all():  # parses that merge: where do they disagree where their MCU began?
            merging = np.flatnonzero(~keep)
            ahead = np.where(seen[merging], self.owners[keys[merging]], mark[first[merging]])
            clash = _clash(ahead, mark[merging])
            if clash.any():
                self.unsure = max(self.unsure, int(keys[merging[clash]].max()) // (self.blocks * _BLOCK))
            parses, mark = parses[:, keep], mark[keep]
        keys, begun = parses[0], parses[1]
        self.seen_array[keys] = 1
        self.owners[keys] = mark
        p, block, k, window, advance, step = self._moves(keys)
        after = p + advance
        ends = (after > self.bits) | ((advance == 0) & (p + _WINDOW > self.bits))
        if ends.any():
            cut = self._cut(p[ends], block[ends], k[ends], window[ends])
            found.update(cut.tolist())
            self.last_starts.update(parses[2, ends][~cut].tolist())
        k = k + step
        done = (k == _BLOCK) | (step == _BLOCK)
        block = block + done
        wraps = block == self.blocks
        moved = np.stack(
            [
                self._key(after, np.where(wraps, 0, block), np.where(done, 0, k)),
                np.where(wraps, after, begun),
                np.where(wraps, begun, parses[2]),
            ]
        )
        return moved[:, ~ends & (advance > 0) & ((k < _BLOCK) | done)]

    def _cut(self, p, block, k, window):
        """For parses that cannot read another whole symbol (arrays, or one parse's ints): whether they stop short
        of an MCU's end followed by nothing but fill bits (at most 7, all ones)."""
        left = self.bits - p
        fill = np.minimum(left, _PADDING)
        whole = (block == 0) & (k == 0) & (left <= _PADDING) & ((window >> (16 - fill)) == (1 << fill) - 1)
        return np.logical_not(whole)

    def _follow(
        self, key: int, found: set[bool], mcus: int | None = None, began: int | None = None, last: int = -1
    ) -> None:
        """One parse to its end, or to a state another has reached (the `_step` loop, one state at a time); from an
        MCU's start, where `mcus` is known, counting the MCUs it reads. In a repeating run, once at an MCU's start
        where it was a whole number of periods before, it skips as many such cycles as the run holds."""
        words, bits, blocks, dense = self.word_list, self.bits, self.blocks, self.dense
        near, owners, lookups = self.seen_near, self.far_owners, self.lookups
        position, k = divmod(key, _BLOCK)
        p, block = divmod(position, blocks)
        run, period, run_end = self.repeat or (bits, 1, bits)
        marks: dict[int, tuple[int, int]] | None = {}  # phase in the run -> (position, MCUs read) at an MCU's start
        read = 0
        if began is None:
            began = p if block == k == 0 else -p - 2  # where this MCU began; `last`: the one before
        for _ in range(_BUDGET[1] - self.read):
            key = (p * blocks + block) * _BLOCK + k
            mark = last if block == k == 0 else began  # as `_step`'s
            if key in owners or (p < dense and near[key]):  # another parse was here: this one ends in it
                # (a state `_sync` saw has no owner: it lies before `unsure`, where no answer counts)
                if _clash(owners[key] if key in owners else int(self.owners[key]), mark):
                    self.unsure = max(self.unsure, p)
                break
            owners[key] = mark
            window = (words[p >> 3] >> (16 - (p & 7))) & 0xFFFF
            move = lookups[2 * block + (k > 0)][window]
            advance, step = move & 0xFF, (move >> 8) & 0xFF
            if p + advance > bits or (not advance and p + _WINDOW > bits):
                cut = bool(self._cut(p, block, k, window)) or (mcus is not None and read != mcus)
                found.add(cut)
                if not cut:
                    self.last_starts.add(last)
                break
            k += step
            if not advance or (k > _BLOCK and step != _BLOCK):
                break
            p += advance
            if k < _BLOCK:
                continue
            block, k = (block + 1) % blocks, 0
            if block:
                continue
            read += 1
            began, last = p, began
            if marks is not None and p >= run:
                if (phase := (p - run) % period) in marks:
                    before, read_before = marks[phase]
                    cycles = max(0, (run_end - 64 - p) // (p - before))
                    p, read = p + cycles * (p - before), read + cycles * (read - read_before)
                    began, last = p, -1
                    marks = None  # one skip takes it to the run's end
                else:
                    marks[phase] = p, read
        else:
            raise _OverBudget
        self.read += _ + 1
