"""A JPEG's last MCU as its codes say it decodes, held against the MCU as decoded: the check for a scan cut where an
MCU ends that lost exactly one MCU.

The parse of the scan's last bytes (`scan_end`) cannot tell that cut from a sound end: the codes stop where an MCU
ends either way, with one-bits after them like an encoder's fill. A decoder then reads the lost MCU from those bits
and the zeros it supplies past the end: its pixels are not what the last MCU's codes say (more MCUs lost decode grey,
which `damage.grey_filled` finds). What the codes say is known but for each block's level (a DC is coded as the
difference from the block before, which the last bytes do not hold), so each block is compared less its own level,
on the lead component (luma), whose decoded value the RGB pixels give back whatever the chroma (Y from R, G and B
cancels Cb and Cr), leaving out pixels a channel of which clipped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# The orthonormal 8-point DCT-II, whose inverse is JPEG's IDCT: pixels = DCT.T @ coefficients @ DCT.
_DCT = np.array(
    [[np.sqrt((1 if u == 0 else 2) / 8) * np.cos((2 * x + 1) * u * np.pi / 16) for x in range(8)] for u in range(8)]
)
_LUMA = np.array([0.299, 0.587, 0.114])
# Median absolute deviation, in levels, of a block's decoded luma from its codes' beyond which the two differ: sound
# files measured at most 0.25 (libjpeg-turbo), an MCU decoded from zero bits mostly 3 to 24 (tests/test_last_mcu.py).
MISMATCH = 1.5
_FEWEST = 4  # pixels of a block to judge it by (a last MCU may show as few as one)


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

    def differs(self, corner: np.ndarray, rows: int, columns: int) -> bool:
        """Whether the decoded image's bottom-right corner (`corner`: RGB, cut from the stored, not yet upright,
        pixels), whose last MCU shows `rows` x `columns` pixels, decodes unlike these codes in any block."""
        if corner.ndim != 3 or corner.shape[0] < rows or corner.shape[1] < columns:
            return False
        rgb = corner[-rows:, -columns:, :3].astype(np.float64)
        luma = rgb @ _LUMA if rgb.shape[2] == 3 else rgb[:, :, 0]
        usable = np.all((rgb > 0) & (rgb < 255), axis=2) & ~np.isnan(self.pixels[:rows, :columns])
        coded = np.nan_to_num(self.pixels[:rows, :columns])
        deviation = luma - coded
        for y in range(0, rows, 8):
            for x in range(0, columns, 8):
                area = np.s_[y : y + 8, x : x + 8]
                level = np.median(deviation[area][usable[area]]) if usable[area].any() else 0.0
                # Where the codes put luma past black or white, the decoder clipped it: not comparable.
                inside = usable[area] & (coded[area] + level > 1) & (coded[area] + level < 254)
                block = deviation[area][inside]
                if len(block) >= _FEWEST and np.median(np.abs(block - np.median(block))) > MISMATCH:
                    return True
        return False
