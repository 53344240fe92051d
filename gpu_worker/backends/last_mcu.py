"""A JPEG's last MCU as its codes say it decodes, held against the MCU as decoded: the check for a scan cut where an
MCU ends that lost exactly one MCU.

The parse of the scan's last bytes (`scan_end`) cannot tell that cut from a sound end: the codes stop where an MCU
ends either way, with one-bits after them like an encoder's fill. A decoder then reads the lost MCU from those bits
and the zeros it supplies past the end: its pixels are not what the last MCU's codes say (more MCUs lost decode grey,
which `damage.grey_filled` finds). What the codes say is known but for each block's level (a DC is coded as the
difference from the block before, which the last bytes do not hold), so each block is compared less its own level,
on the lead component (luma), whose decoded value the RGB pixels give back whatever the chroma (Y from R, G and B
cancels Cb and Cr), leaving out pixels a channel of which clipped. A pixel clipped in every channel still bounds its
block's level: white ones from below, black ones from above (a lost MCU's few pixels shown may all be clipped).

A last MCU that shows only a few pixels (an image a pixel or two wider or taller than a multiple of the MCU) may not
show the lost MCU's pattern. Then the MCU before it is held against the codes too: if the last MCU was lost, the
codes are that MCU's, and it decodes exactly as they say; in a sound file it is another MCU's area. Codes with no
pattern (a flat area) are left out: any flat MCU would match them. A last MCU of `TOO_FEW` pixels or fewer is not
judged at all (`too_few_shown`): DALI leaves the file to vips, whose strict decoder counts the MCUs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from gpu_worker.backends.damage import JpegFrame

# The orthonormal 8-point DCT-II, whose inverse is JPEG's IDCT: pixels = DCT.T @ coefficients @ DCT.
_DCT = np.array(
    [[np.sqrt((1 if u == 0 else 2) / 8) * np.cos((2 * x + 1) * u * np.pi / 16) for x in range(8)] for u in range(8)]
)
_LUMA = np.array([0.299, 0.587, 0.114])
# Levels a pixel's decoded luma may stand off its codes' (less the block's level) in a sound file: an IDCT that meets
# IEEE 1180 is off by at most 1, rounding R, G and B adds at most 0.5 (sound files measured at most 1.05 on
# libjpeg-turbo). An MCU decoded from zero bits is off by 3 to 60 somewhere, often in a few pixels only (its
# coefficients are a pattern of -1s: a spike in one corner), which a median over the block would not see.
MISMATCH = 4.0
# Levels within which a decoded MCU is a decode of these very codes (the error bounds above), and the range of levels
# the codes must span for that to say so: a flat or smooth area matches flat codes by chance.
_SAME = 1.5
_PATTERN = 6.0
_FEWEST = 2  # pixels of a block to judge it by: its level is their median (a last MCU may show as few as one)
_ENOUGH = 16  # pixels judged in a last MCU below which the MCU before it is held against its codes too
_BEFORE = 8  # pixels of the MCU before to judge it by: a row of a block (a last MCU row may show one)
# Pixels a last MCU may show at or below which neither it nor the MCU before tells a lost MCU every time: 2 of 3,487
# cuts untold where it showed 1 to 4 pixels, none of 5,786 where it showed 5 to 16 (`benchmarks.damage_cost
# --sample 1200`).
TOO_FEW = 4


def too_few_shown(frame: JpegFrame) -> bool:
    """Whether a sequential JPEG's last MCU shows `TOO_FEW` pixels or fewer, too few to tell from its decode that it
    was lost (an image of one MCU aside: the parse of its scan's last bytes reads the whole scan)."""
    rows, columns = frame.last_mcu()
    mcu_w, mcu_h = frame.mcu()
    return frame.sequential and rows * columns <= TOO_FEW and (frame.width > mcu_w or frame.height > mcu_h)


@dataclass(frozen=True)
class LastMcu:
    """The lead component's blocks of a JPEG's last MCU, as pixels less each block's level: `(height, width)` of an
    MCU, NaN where no block of the lead component lies."""

    pixels: np.ndarray

    @classmethod
    def of(cls, coefficients: np.ndarray, quant: np.ndarray, factors: tuple[int, int]) -> LastMcu:
        """From the blocks' coefficients as coded (`scan_end.ScanEnd.last`: natural order, quantised), the lead
        component's quantisation table (natural order) and its sampling factors (blocks across, down an MCU)."""
        across, down = factors
        pixels = np.full((8 * down, 8 * across), np.nan)
        for n, block in enumerate(coefficients):
            dequantised = (block * quant).reshape(8, 8)
            dequantised[0, 0] = 0  # the level: unknown
            y, x = divmod(n, across)
            pixels[8 * y : 8 * y + 8, 8 * x : 8 * x + 8] = _DCT.T @ dequantised @ _DCT
        return cls(pixels)

    def lost(self, corner: np.ndarray, frame: JpegFrame) -> bool:
        """Whether the decoded image's bottom-right corner (`corner`: RGB, cut from the stored, not yet upright,
        pixels, at most `damage.MAX_MCU` square) shows a scan that lost its last MCU: that MCU decodes unlike these
        codes; or it shows too few pixels to tell, and the MCU before it (to its left; above, in an image one MCU
        wide) decodes as these codes, which have a pattern, say."""
        rows, columns = frame.last_mcu()
        worst, judged, _ = self._held(corner, rows, columns)
        if worst > MISMATCH:
            return True
        if judged >= _ENOUGH:
            return False
        mcu_w, mcu_h = frame.mcu()
        if frame.width > mcu_w:  # the MCU to the left: as many rows, a whole MCU across
            before, rows, columns = corner[:, : corner.shape[1] - columns], rows, mcu_w
        elif frame.height > mcu_h:  # the MCU above: a whole MCU down, as many columns
            before, rows, columns = corner[: corner.shape[0] - rows], mcu_h, columns
        else:
            return False  # one MCU: the whole scan was parsed, its count known
        worst, judged, pattern = self._held(before, rows, columns)
        return judged >= _BEFORE and worst <= _SAME and pattern > _PATTERN

    def differs(self, corner: np.ndarray, rows: int, columns: int) -> bool:
        """Whether the MCU at the bottom right of `corner`, which shows `rows` x `columns` pixels, decodes unlike
        these codes in any block."""
        return self.worst(corner, rows, columns) > MISMATCH

    def worst(self, corner: np.ndarray, rows: int, columns: int) -> float:
        """The most levels any pixel of the MCU at the bottom right of `corner` stands off these codes, less its
        block's level (0 where no block has enough pixels to judge)."""
        return self._held(corner, rows, columns)[0]

    def _held(self, corner: np.ndarray, rows: int, columns: int) -> tuple[float, int, float]:
        """The MCU at the bottom right of `corner` (`rows` x `columns` of it shown) against these codes: the most
        levels a pixel stands off them, less its block's level; how many pixels were judged; and the range of the
        codes' levels over them (how much pattern was held against)."""
        if corner.ndim != 3 or corner.shape[0] < rows or corner.shape[1] < columns:
            return 0.0, 0, 0.0
        rgb = corner[-rows:, -columns:, :3].astype(np.float64)
        luma = rgb @ _LUMA if rgb.shape[2] == 3 else rgb[:, :, 0]
        coded_here = ~np.isnan(self.pixels[:rows, :columns])
        usable = np.all((rgb > 0) & (rgb < 255), axis=2) & coded_here
        # A pixel white (black) in every channel was decoded from luma at white or above (black or below): a bound
        # on its block's level, where nothing else of it can be compared.
        white, black = np.all(rgb >= 255, axis=2) & coded_here, np.all(rgb <= 0, axis=2) & coded_here
        coded = np.nan_to_num(self.pixels[:rows, :columns])
        deviation = luma - coded
        worst, judged, pattern = 0.0, 0, 0.0
        for y in range(0, rows, 8):
            for x in range(0, columns, 8):
                area = np.s_[y : y + 8, x : x + 8]
                level = np.median(deviation[area][usable[area]]) if usable[area].any() else None
                floor = float(np.max(255 - coded[area][white[area]], initial=-np.inf))
                ceiling = float(np.min(0 - coded[area][black[area]], initial=np.inf))
                if level is None:  # the level that fits the bounds best
                    worst = max(worst, (floor - ceiling) / 2)
                    continue
                worst = max(worst, floor - level, level - ceiling)
                # Where the codes put luma past black or white, the decoder clipped it: not comparable.
                inside = usable[area] & (coded[area] + level > 1) & (coded[area] + level < 254)
                block = deviation[area][inside]
                if len(block) >= _FEWEST:
                    worst = max(worst, float(np.abs(block - np.median(block)).max()))
                    judged += len(block)
                    pattern = max(pattern, float(np.ptp(coded[area][inside])))
        return float(worst), judged, pattern
