"""A small hand-labelled set of (item evidence, descriptor, label) cases for measuring judges.

Written for this project (made-up, generic products). Label 1: a specific, actionable purchase
motivation grounded in the item's evidence. Label 0: vague or generic marketing ("a great gift"),
a demographic guess, a restatement of the product without a need behind it, or a specific-sounding
need that belongs to a different item. Kept in Python (not a data file) so it ships with the
package without packaging configuration.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: item_id -> (title, description, categories, brand)
_ITEMS: dict[str, tuple[str, str, str, str]] = {
    "lab-i01": (
        "Waterproof Basement Wall Sealer, 1 Gallon",
        "Masonry waterproofing coating that seals concrete and cinder block walls against moisture and "
        "seepage. Brush or roll on two coats.",
        "Tools & Home Improvement > Building Supplies > Sealants",
        "DryGuard",
    ),
    "lab-i02": (
        "Adjustable Volume Micropipette 10-100 uL",
        "Single-channel pipette with digital volume display and autoclavable lower part, for accurate "
        "liquid handling.",
        "Industrial & Scientific > Lab & Scientific Products > Pipettes",
        "LabStar",
    ),
    "lab-i03": (
        "Stainless Steel Espresso Tamper 58mm",
        "Flat-base tamper with walnut handle for compressing coffee grounds in a 58 mm portafilter.",
        "Home & Kitchen > Coffee, Tea & Espresso > Espresso Accessories",
        "Baristo",
    ),
    "lab-i04": (
        "Nitrile Exam Gloves, Box of 100, Medium",
        "Powder-free, latex-free disposable gloves with textured fingertips, for medical, laboratory and "
        "food handling.",
        "Industrial & Scientific > Lab Safety > Gloves",
        "SafeHands",
    ),
    "lab-i05": (
        "Digital Soil pH and Moisture Meter",
        "Three-in-one probe measures soil moisture, pH and light level for garden beds and potted plants.",
        "Patio, Lawn & Garden > Gardening > Soil Testers",
        "GreenProbe",
    ),
    "lab-i06": (
        "Replacement Furnace Flame Sensor",
        "Universal flame sensor rod for gas furnaces; fixes short cycling and ignition lockout.",
        "Tools & Home Improvement > Heating, Cooling & Air Quality > Furnace Parts",
        "HeatPro",
    ),
    "lab-i07": (
        "Kids' Microscope Kit with 40x-640x Magnification",
        "Beginner compound microscope with prepared slides, LED light and storage case for young scientists.",
        "Toys & Games > Learning & Education > Science Kits",
        "TinyLab",
    ),
    "lab-i08": (
        "Heavy-Duty Stainless Steel Degreaser Spray",
        "Cuts grease on range hoods, fryers and griddles in commercial kitchens. Food-safe after rinsing.",
        "Industrial & Scientific > Janitorial > Cleaners",
        "KitchenPro",
    ),
    "lab-i09": (
        "Cast Iron Dutch Oven, 6 Quart, Enameled",
        "Enameled cast iron pot for braising, baking bread and slow-cooking stews; oven safe to 260 C.",
        "Home & Kitchen > Cookware > Dutch Ovens",
        "Hearthware",
    ),
    "lab-i10": (
        "Bike Chain Cleaning Tool with Degreaser",
        "Clip-on chain scrubber with rotating brushes and a reservoir; removes grime from bicycle drivetrains.",
        "Sports & Outdoors > Cycling > Bike Tools",
        "PedalCare",
    ),
    "lab-i11": (
        "Acid-Free Archival Photo Storage Boxes, Set of 3",
        "Lignin-free boxes with index cards for storing 4x6 prints long term without yellowing.",
        "Office Products > Storage > Photo Boxes",
        "KeepSafe",
    ),
    "lab-i12": (
        "Aquarium Water Test Kit (pH, Ammonia, Nitrite, Nitrate)",
        "Liquid reagent test kit for freshwater and saltwater aquariums; 800 tests.",
        "Pet Supplies > Fish & Aquatic Pets > Water Test Kits",
        "ReefCheck",
    ),
}

#: (item_id, descriptor, label)
_CASES: tuple[tuple[str, str, int], ...] = (
    ("lab-i01", "sealing a damp basement wall", 1),
    ("lab-i01", "stopping water seepage through concrete blocks", 1),
    ("lab-i01", "a great gift for anyone", 0),
    ("lab-i01", "calibrating laboratory glassware", 0),
    ("lab-i02", "measuring small liquid volumes in a biology lab", 1),
    ("lab-i02", "preparing PCR reactions", 1),
    ("lab-i02", "designed to enhance your business", 0),
    ("lab-i02", "brewing espresso at home", 0),
    ("lab-i03", "pulling espresso shots at home", 1),
    ("lab-i03", "compressing coffee grounds evenly in a portafilter", 1),
    ("lab-i03", "high quality product", 0),
    ("lab-i03", "improving your lifestyle", 0),
    ("lab-i04", "protecting hands while handling chemicals in a lab", 1),
    ("lab-i04", "hygienic food preparation in a commercial kitchen", 1),
    ("lab-i04", "for everyday use", 0),
    ("lab-i04", "repairing a bicycle chain", 0),
    ("lab-i05", "testing garden soil before planting vegetables", 1),
    ("lab-i05", "keeping potted houseplants properly watered", 1),
    ("lab-i05", "a must-have for every home", 0),
    ("lab-i05", "tuning a guitar", 0),
    ("lab-i06", "fixing a gas furnace that keeps shutting off", 1),
    ("lab-i06", "a reliable solution for all your needs", 0),
    ("lab-i06", "decorating a child's bedroom", 0),
    ("lab-i06", "for homeowners over 50", 0),
    ("lab-i07", "introducing a child to biology with prepared slides", 1),
    ("lab-i07", "homeschool science lessons", 1),
    ("lab-i07", "a great gift", 0),
    ("lab-i07", "a premium experience", 0),
    ("lab-i08", "cleaning grease from a restaurant range hood", 1),
    ("lab-i08", "making life easier", 0),
    ("lab-i08", "sealing a damp basement wall", 0),
    ("lab-i09", "baking crusty sourdough bread at home", 1),
    ("lab-i09", "slow-cooking stews and braises", 1),
    ("lab-i09", "perfect for any occasion", 0),
    ("lab-i09", "measuring small liquid volumes in a biology lab", 0),
    ("lab-i09", "a high-quality cooking pot", 0),
    ("lab-i10", "maintaining a road bike drivetrain", 1),
    ("lab-i10", "stay active and healthy", 0),
    ("lab-i10", "innovative design", 0),
    ("lab-i11", "preserving old family photographs", 1),
    ("lab-i11", "organising printed photos by date", 1),
    ("lab-i11", "a thoughtful present for loved ones", 0),
    ("lab-i11", "designed to enhance your business", 0),
    ("lab-i12", "monitoring water quality in a freshwater fish tank", 1),
    ("lab-i12", "cycling a new aquarium before adding fish", 1),
    ("lab-i12", "for pet lovers", 0),
    ("lab-i12", "testing garden soil before planting vegetables", 0),
)

LABELLED_COLUMNS = ["case_id", "item_id", "title", "description", "categories", "brand", "descriptor", "label"]


def load_labelled_descriptors() -> pd.DataFrame:
    """The hand-labelled cases: case_id, item_id, title, description, categories, brand, descriptor, label."""
    rows = []
    for i, (item_id, descriptor, label) in enumerate(_CASES):
        title, description, categories, brand = _ITEMS[item_id]
        rows.append((i, item_id, title, description, categories, brand, descriptor, label))
    df = pd.DataFrame(rows, columns=LABELLED_COLUMNS)
    df["label"] = df["label"].astype("int64")
    return df


def split_labelled_by_item(labelled: pd.DataFrame, *, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split the cases into two halves by item (seeded), so thresholds fitted on one half are
    reported on items they never saw."""
    items = np.array(sorted(labelled["item_id"].unique()))
    order = np.random.default_rng(seed).permutation(len(items))
    fit_items = set(items[order[: len(items) // 2]])
    in_fit = labelled["item_id"].isin(fit_items)
    return labelled[in_fit].reset_index(drop=True), labelled[~in_fit].reset_index(drop=True)
