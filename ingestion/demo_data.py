"""A synthetic, learnable shop in the Amazon Reviews 2018 format, with its hidden ground truth.

``write_demo_dataset`` writes ``Demo.json.gz`` (reviews) and ``meta_Demo.json.gz`` (item metadata) exactly
as the 2018 dumps lay them out, so the demo is read through the real Amazon 2018 loader, plus
``motivations.json``: which hidden motivations exist, which items serve which, and which user pursues which
(from which position of their sequence). That file is for tests and analysis only; the pipeline never
reads it.

How the data is made (all draws from one ``numpy`` generator seeded by ``seed``):

- A hand-written catalogue of real-life motivations ("setting up a first freshwater aquarium", ...), each
  with products in the order people usually buy them (starter items first). Every product gets one or two
  branded variants; some products serve several motivations; a few generic items (batteries, tape) serve
  none and are bought by anyone.
- Each user pursues one motivation, or two one after the other (a switch part-way). A sequence has 6-30
  purchases: mostly the current motivation's items, drawn without replacement with popularity skew and
  ordered by their stage plus noise; about 12 % generic items and 5 % random items are mixed in.
- Ratings 1-5 skewed high (random items lower); timestamps strictly increasing per user, 2015-2020.
"""

from __future__ import annotations

import gzip
import json
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

DEMO_DATASET = "Demo"
REVIEWS_FILE = f"{DEMO_DATASET}.json.gz"
META_FILE = f"meta_{DEMO_DATASET}.json.gz"
MOTIVATIONS_FILE = "motivations.json"
GENERATOR_VERSION = 1  # bump when the generated data changes for a given seed

_START = int(datetime(2015, 1, 1, tzinfo=UTC).timestamp())
_LAST_START = int(datetime(2019, 6, 30, tzinfo=UTC).timestamp())
_END = int(datetime(2020, 12, 31, tzinfo=UTC).timestamp())
_GENERIC_SHARE = 0.12
_NOISE_SHARE = 0.05
_TWO_MOTIVATION_SHARE = 0.35


@dataclass(frozen=True)
class _Motivation:
    name: str
    category: tuple[str, ...]  # path above the product's own leaf category
    brands: tuple[str, ...]
    products: tuple[tuple[str, str, str], ...]  # (product, leaf category, description), starter items first


# fmt: off
_CATALOGUE: tuple[_Motivation, ...] = (
    _Motivation("waterproofing a damp basement", ("Tools & Home Improvement", "Building Supplies"),
                ("DryGuard", "Stonewell", "Hydrolok"), (
        ("Concrete Moisture Test Kit", "Test Kits", "Measures moisture vapour coming through slabs and walls."),
        ("Crack Filler for Foundation Walls", "Sealants", "Seals hairline cracks in poured concrete before they leak."),
        ("Masonry Waterproofing Paint, 1 Gallon", "Paint", "A thick coating that stops seepage through block walls."),
        ("Hydraulic Cement, 10 lb", "Concrete", "Sets in minutes to plug active leaks around pipes."),
        ("Submersible Sump Pump 1/3 HP", "Pumps", "Moves water out of a sump pit automatically with a float switch."),
        ("Sump Pump Check Valve", "Plumbing", "Stops pumped water from flowing back into the pit."),
        ("Water Leak Alarm with Sensor", "Alarms", "Sounds a loud alarm when its probe touches water."),
        ("Downspout Extension, Flexible", "Gutters", "Carries roof water away from the foundation."),
        ("Vapor Barrier Sheeting 6 mil", "Insulation", "Polyethylene sheeting for crawl spaces and slab edges."),
    )),
    _Motivation("setting up a first freshwater aquarium", ("Pet Supplies", "Fish & Aquatic Pets"),
                ("AquaNova", "ClearCurrent", "Reefline"), (
        ("10-Gallon Glass Aquarium Starter Kit", "Aquariums", "Tank, hood with LED light and filter for beginners."),
        ("Aquarium Water Conditioner", "Water Treatments", "Removes chlorine and chloramine from tap water."),
        ("Freshwater Master Test Kit", "Water Tests", "Tests ammonia, nitrite, nitrate and pH during cycling."),
        ("Nitrifying Bacteria Starter", "Water Treatments", "Seeds the filter so a new tank cycles faster."),
        ("Adjustable Submersible Heater 50W", "Heaters", "Keeps tropical fish at a steady temperature."),
        ("Natural Aquarium Gravel, 5 lb", "Substrate", "Rinsed river gravel for the tank bottom."),
        ("Tropical Fish Flakes", "Fish Food", "Daily staple food for community fish."),
        ("Gravel Vacuum Siphon", "Cleaning", "Cleans the substrate during weekly water changes."),
        ("Live Aquarium Plant Bundle", "Plants", "Easy plants that use up nitrate and shelter fish."),
        ("Algae Scraper Magnet", "Cleaning", "Cleans the glass without getting your hands wet."),
    )),
    _Motivation("making espresso at home", ("Home & Kitchen", "Coffee, Tea & Espresso"),
                ("Crema Bella", "Baristo", "Molino"), (
        ("Semi-Automatic Espresso Machine", "Espresso Machines", "15-bar pump machine with a steam wand."),
        ("Conical Burr Coffee Grinder", "Grinders", "Grinds fine and even enough for espresso."),
        ("Stainless Steel Espresso Tamper 58mm", "Tampers", "Calibrated tamper for an even puck."),
        ("Milk Frothing Pitcher 12 oz", "Pitchers", "Spouted pitcher for steaming milk and latte art."),
        ("Espresso Knock Box", "Accessories", "Collects spent coffee pucks next to the machine."),
        ("Whole Bean Espresso Roast, 2 lb", "Coffee Beans", "Medium-dark roast with chocolate notes."),
        ("Espresso Machine Descaler", "Cleaning", "Removes scale from the boiler and group head."),
        ("Group Head Cleaning Brush", "Cleaning", "Scrubs coffee oils off the gasket and screen."),
        ("Double-Wall Espresso Glasses, Set of 4", "Cups", "Insulated glasses that show off the crema."),
    )),
    _Motivation("starting a vegetable garden", ("Patio, Lawn & Garden", "Gardening & Lawn Care"),
                ("GreenThumb", "Terrafarm", "Sproutly"), (
        ("Vegetable Seed Starter Variety Pack", "Seeds", "Tomato, pepper, lettuce, bean and squash seeds."),
        ("Seed Starting Trays with Humidity Domes", "Seed Starting", "72-cell trays for starting seedlings indoors."),
        ("Organic Seed Starting Mix, 8 qt", "Soil", "Fine, sterile mix that seedlings root into easily."),
        ("Cedar Raised Garden Bed 4x4 ft", "Raised Beds", "Untreated cedar bed that assembles without tools."),
        ("Organic Vegetable Garden Soil, 1.5 cu ft", "Soil", "Compost-rich soil for filling raised beds."),
        ("Garden Hand Trowel and Transplanter Set", "Hand Tools", "Forged tools for planting seedlings out."),
        ("Soaker Hose 50 ft", "Watering", "Delivers water slowly at the roots of each row."),
        ("Tomato Cages, Pack of 6", "Plant Supports", "Galvanised cages that hold heavy tomato plants."),
        ("Organic Vegetable Fertilizer 4 lb", "Fertilizers", "Slow-release granules for fruiting vegetables."),
        ("Bird Netting for Garden Beds", "Pest Control", "Keeps birds and squirrels off ripening crops."),
    )),
    _Motivation("3D printing as a hobby", ("Industrial & Scientific", "Additive Manufacturing Products"),
                ("Layerforge", "Printwell", "Filamento"), (
        ("FDM 3D Printer Kit 220x220 mm", "3D Printers", "Open-frame printer kit with a heated bed."),
        ("PLA Filament 1.75mm, 1 kg, Black", "Filament", "Easy-printing PLA with tight diameter tolerance."),
        ("PEI Magnetic Build Plate", "Build Surfaces", "Flexible plate that pops prints off when bent."),
        ("3D Print Removal and Cleanup Tool Kit", "Tools", "Scrapers, deburring tool and nozzle cleaners."),
        ("Brass Nozzle Set 0.2-1.0 mm", "Printer Parts", "Replacement nozzles in eight sizes."),
        ("PETG Filament 1.75mm, 1 kg", "Filament", "Tough, slightly flexible filament for functional parts."),
        ("Filament Dry Box", "Storage", "Keeps spools dry with a hygrometer and desiccant."),
        ("Digital Calipers 6 inch", "Measuring Tools", "Measures parts to 0.01 mm for design checks."),
        ("Silicone Hotend Sock", "Printer Parts", "Insulates the heater block and keeps it clean."),
    )),
    _Motivation("keeping honeybees", ("Patio, Lawn & Garden", "Beekeeping"),
                ("HiveCraft", "Meadowbee", "Goldcomb"), (
        ("Beginner Langstroth Beehive Kit, 10 Frame", "Hives", "Complete hive with frames and foundation."),
        ("Ventilated Beekeeping Jacket with Veil", "Protective Clothing", "Mesh jacket with a fencing veil."),
        ("Goatskin Beekeeping Gloves", "Protective Clothing", "Long-cuff gloves that resist stings."),
        ("Stainless Steel Bee Smoker", "Tools", "Calms bees with cool smoke during inspections."),
        ("Hive Tool, J-Hook", "Tools", "Pries frames apart and scrapes burr comb."),
        ("Entrance Feeder for Sugar Syrup", "Feeders", "Feeds new colonies until they build comb."),
        ("Queen Excluder, Metal", "Hive Parts", "Keeps the queen out of the honey supers."),
        ("Honey Extractor, 2 Frame Manual", "Harvesting", "Spins honey out of capped frames."),
        ("Uncapping Fork and Knife Set", "Harvesting", "Opens wax cappings before extraction."),
        ("Glass Honey Jars with Lids, 12 Pack", "Storage", "Jars for bottling the first harvest."),
    )),
    _Motivation("learning electronics soldering", ("Industrial & Scientific", "Electronics Tools"),
                ("Voltix", "Solderpoint", "Circuitry"), (
        ("Temperature-Controlled Soldering Station 60W", "Soldering", "Adjustable iron with a stand and tip cleaner."),
        ("Rosin Core Solder Wire 0.8mm", "Soldering", "Lead-free solder for through-hole parts."),
        ("Learn to Solder Practice Kit", "Kits", "Blinking LED board kit with step-by-step guide."),
        ("Helping Hands with Magnifier", "Workholding", "Alligator clips hold boards while you solder."),
        ("Solder Fume Extractor Fan", "Safety", "Carbon-filter fan that pulls fumes away."),
        ("Solderless Breadboard and Jumper Wire Kit", "Prototyping", "Prototype circuits before soldering."),
        ("Desoldering Pump", "Soldering", "Removes solder to fix mistakes."),
        ("Electronic Components Assortment", "Components", "Resistors, capacitors, LEDs and transistors."),
        ("Microcontroller Starter Board", "Development Boards", "Programmable board for first projects."),
    )),
    _Motivation("family tent camping", ("Sports & Outdoors", "Camping & Hiking"),
                ("Trailpeak", "Northwild", "Campfell"), (
        ("6-Person Dome Tent", "Tents", "Roomy tent with a rain fly that pitches in ten minutes."),
        ("Sleeping Bag, 30 Degree", "Sleeping Bags", "Rectangular bag for three-season camping."),
        ("Self-Inflating Sleeping Pad", "Sleeping Pads", "Foam pad that insulates from cold ground."),
        ("Two-Burner Camping Stove", "Stoves", "Propane stove for cooking family meals outdoors."),
        ("Camping Cookware Mess Kit", "Cookware", "Nesting pots, pans and utensils."),
        ("Rechargeable Camping Lantern", "Lighting", "Bright LED lantern for the campsite and tent."),
        ("Folding Camp Chair with Cup Holder", "Furniture", "Sturdy chair that packs into a shoulder bag."),
        ("Hard-Sided Camping Cooler 50 qt", "Coolers", "Keeps ice for days on a weekend trip."),
        ("Tent Footprint Groundsheet", "Tent Accessories", "Protects the tent floor from rocks and wet."),
    )),
    _Motivation("preparing a baby's nursery", ("Baby Products", "Nursery"),
                ("Lullabye", "Nestling", "Cradlewood"), (
        ("Convertible Crib, Solid Pine", "Cribs", "Converts from crib to toddler bed as the baby grows."),
        ("Breathable Crib Mattress", "Mattresses", "Firm mattress that fits standard cribs snugly."),
        ("Fitted Crib Sheets, 2 Pack", "Bedding", "Soft cotton sheets with deep elastic corners."),
        ("Video Baby Monitor with Night Vision", "Monitors", "Camera and parent unit with two-way talk."),
        ("Changing Table with Storage Shelves", "Furniture", "Waist-high changing surface with shelves."),
        ("Blackout Curtains for Nursery", "Decor", "Block daylight for naps."),
        ("White Noise Sound Machine", "Sleep", "Soothing sounds that mask household noise."),
        ("Nursery Glider Rocking Chair", "Furniture", "Quiet glider for feeding and rocking."),
        ("Cordless Baby Nail Clippers", "Health", "Gentle trimmer for tiny nails."),
    )),
    _Motivation("home brewing beer", ("Home & Kitchen", "Home Brewing & Wine Making"),
                ("Brewhaus", "Hopwell", "Maltcraft"), (
        ("One Gallon Beer Brewing Starter Kit", "Kits", "Fermenter, airlock and ingredients for a first batch."),
        ("No-Rinse Brewing Sanitizer", "Cleaning", "Sanitizes equipment without rinsing."),
        ("5 Gallon Stainless Brew Kettle", "Kettles", "Kettle with a ball valve for full batches."),
        ("Glass Carboy 5 Gallon", "Fermenters", "Glass fermenter that does not hold odours."),
        ("Triple Scale Hydrometer", "Testing", "Measures gravity to track fermentation."),
        ("Immersion Wort Chiller", "Cooling", "Copper coil that cools wort quickly."),
        ("Bottle Capper and Crown Caps", "Bottling", "Caps bottles for carbonation."),
        ("Auto-Siphon Racking Cane", "Transfer", "Moves beer off sediment without mouth suction."),
        ("American Ale Dry Yeast, 3 Pack", "Ingredients", "Clean-fermenting yeast for pale ales."),
    )),
    _Motivation("baking sourdough bread", ("Home & Kitchen", "Kitchen & Dining"),
                ("Crumbhouse", "Levain & Co", "Oakmill"), (
        ("Dried Sourdough Starter Culture", "Baking Ingredients", "Active culture to grow a starter at home."),
        ("Glass Starter Jar with Band", "Storage", "Wide jar with a band to track the rise."),
        ("Unbleached Bread Flour, 10 lb", "Baking Ingredients", "High-protein flour for open crumb."),
        ("Banneton Proofing Basket, Round", "Bakeware", "Rattan basket that shapes the final proof."),
        ("Bread Lame Scoring Tool", "Baking Tools", "Razor holder for scoring loaves."),
        ("Enameled Cast Iron Dutch Oven 5 qt", "Cookware", "Traps steam for a crackling crust."),
        ("Flexible Bowl Scraper Set", "Baking Tools", "Scrapers for handling sticky dough."),
        ("Bread Knife, Serrated 10 inch", "Cutlery", "Slices crusty loaves cleanly."),
    )),
    _Motivation("beginner woodworking", ("Tools & Home Improvement", "Power & Hand Tools"),
                ("Oakhurst", "Timbercraft", "Jointline"), (
        ("Cordless Drill Driver Kit 20V", "Drills", "Drill with two batteries and a charger."),
        ("Wood Chisel Set, 4 Piece", "Chisels", "Bevel-edge chisels for joinery."),
        ("Quick-Grip Bar Clamps, 4 Pack", "Clamps", "One-handed clamps for glue-ups."),
        ("Combination Square 12 inch", "Measuring", "Marks square and 45 degree lines."),
        ("Japanese Pull Saw", "Saws", "Thin-kerf saw that cuts on the pull stroke."),
        ("Wood Glue, 16 oz", "Adhesives", "Strong glue for interior woodworking."),
        ("Random Orbital Sander", "Sanders", "Smooth swirl-free finishing."),
        ("Sandpaper Assortment 80-400 Grit", "Abrasives", "Sheets for every stage of sanding."),
        ("Danish Oil Wood Finish", "Finishes", "Penetrating oil that brings out the grain."),
    )),
    _Motivation("making cold-process soap", ("Arts, Crafts & Sewing", "Soap Making"),
                ("Lathery", "Saponia", "Brightbar"), (
        ("Silicone Loaf Soap Mold", "Molds", "Loaf mold with a wooden box for cold process."),
        ("Sodium Hydroxide Lye, 2 lb", "Supplies", "Food-grade lye for cold-process soap."),
        ("Safety Goggles, Anti-Fog", "Safety", "Splash-proof goggles for handling lye."),
        ("Stick Immersion Blender", "Tools", "Brings soap batter to trace quickly."),
        ("Soap Making Oils Sampler", "Oils", "Olive, coconut and shea for a balanced bar."),
        ("Essential Oil Set for Soap", "Fragrance", "Lavender, peppermint and tea tree oils."),
        ("Crinkle Soap Cutter", "Tools", "Cuts loaves into bars with a wavy edge."),
        ("Mica Powder Colorants, 24 Colors", "Colorants", "Skin-safe micas for swirls."),
    )),
    _Motivation("getting into road cycling", ("Sports & Outdoors", "Cycling"),
                ("Velocita", "Spokewise", "Chainline"), (
        ("Aluminum Road Bike, 54 cm", "Bikes", "Lightweight frame with a 16-speed groupset."),
        ("Road Cycling Helmet", "Helmets", "Ventilated helmet with an adjustable fit."),
        ("Padded Cycling Bib Shorts", "Clothing", "Chamois pad for long rides."),
        ("Floor Pump with Gauge", "Pumps", "Inflates road tyres to high pressure."),
        ("Bike Multi-Tool, 16 in 1", "Tools", "Hex keys and chain tool for roadside fixes."),
        ("Clipless Pedals and Cleats", "Pedals", "Clip-in pedals for efficient pedalling."),
        ("Front and Rear Bike Light Set", "Lights", "USB-rechargeable lights for early rides."),
        ("Indoor Bike Trainer", "Trainers", "Turns the bike into a winter trainer."),
        ("Bike Chain Lube, Dry", "Maintenance", "Keeps the drivetrain quiet and clean."),
    )),
    _Motivation("raising backyard chickens", ("Patio, Lawn & Garden", "Farm & Ranch"),
                ("Henhouse", "Cluckworth", "Barnstead"), (
        ("Wooden Chicken Coop with Nesting Box", "Coops", "Coop for four hens with a run."),
        ("Chick Brooder Heat Plate", "Brooding", "Safer warmth for day-old chicks."),
        ("Chick Starter Feed, 25 lb", "Feed", "Medicated starter crumble for chicks."),
        ("Poultry Waterer, 3 Gallon", "Waterers", "Gravity waterer that keeps water clean."),
        ("Hanging Chicken Feeder", "Feeders", "Reduces feed waste and pests."),
        ("Pine Shavings Bedding", "Bedding", "Absorbent bedding for coop floors."),
        ("Layer Pellets, 40 lb", "Feed", "Complete feed for laying hens."),
        ("Oyster Shell Calcium Supplement", "Supplements", "Strengthens egg shells."),
        ("Egg Collecting Basket", "Accessories", "Wire basket for gathering eggs."),
    )),
    _Motivation("starting a home yoga practice", ("Sports & Outdoors", "Exercise & Fitness"),
                ("Lotusline", "Asana Lab", "Calmcore"), (
        ("Non-Slip Yoga Mat 6mm", "Yoga Mats", "Cushioned mat with a grippy texture."),
        ("Cork Yoga Blocks, 2 Pack", "Yoga Blocks", "Support for balance and reach."),
        ("Cotton Yoga Strap", "Yoga Straps", "Helps deepen stretches safely."),
        ("Yoga Bolster Pillow", "Bolsters", "Firm bolster for restorative poses."),
        ("Meditation Cushion", "Meditation", "Buckwheat cushion for seated practice."),
        ("Yoga Mat Cleaner Spray", "Mat Care", "Natural cleaner that keeps mats fresh."),
        ("Yoga Wheel", "Props", "Opens the chest and back."),
        ("Yoga Mat Carrying Strap", "Accessories", "Carries a rolled mat to class."),
    )),
    _Motivation("learning to knit", ("Arts, Crafts & Sewing", "Knitting & Crochet"),
                ("Woolery", "Purlwise", "Skeinsmith"), (
        ("Beginner Knitting Kit with Needles", "Kits", "Needles, yarn and a guide for a first scarf."),
        ("Bamboo Knitting Needles Set", "Needles", "Straight needles in 18 sizes."),
        ("Chunky Merino Yarn, 4 Skeins", "Yarn", "Soft yarn that shows stitches clearly."),
        ("Stitch Markers and Row Counter Set", "Notions", "Keep track of pattern repeats."),
        ("Yarn Swift and Ball Winder", "Tools", "Turns hanks into neat center-pull balls."),
        ("Circular Knitting Needles Set", "Needles", "Interchangeable tips for hats and sweaters."),
        ("Blocking Mats with T-Pins", "Finishing", "Shapes finished pieces while drying."),
        ("Knitting Project Bag", "Storage", "Keeps yarn and needles together."),
    )),
    _Motivation("caring for indoor houseplants", ("Patio, Lawn & Garden", "Indoor Gardening"),
                ("Leafhaus", "Fernly", "Potwell"), (
        ("Ceramic Plant Pots with Drainage, 3 Pack", "Pots", "Glazed pots with saucers."),
        ("Indoor Potting Mix, 8 qt", "Soil", "Airy mix for container plants."),
        ("Long Spout Watering Can", "Watering", "Reaches under leaves without splashing."),
        ("Soil Moisture Meter", "Testing", "Shows when a plant needs water."),
        ("Liquid Houseplant Fertilizer", "Fertilizers", "Balanced feed for foliage plants."),
        ("Plant Mister Spray Bottle", "Watering", "Fine mist for humidity-loving plants."),
        ("Neem Oil Leaf Spray", "Pest Control", "Treats gnats and mealybugs naturally."),
        ("Moss Pole for Climbing Plants", "Supports", "Support for monsteras and pothos."),
        ("Pruning Snips", "Tools", "Precise snips for trimming leaves."),
    )),
    _Motivation("setting up a first home office", ("Office Products", "Office Furniture & Lighting"),
                ("Deskline", "Workwell", "Ergonova"), (
        ("Electric Standing Desk 48 inch", "Desks", "Height-adjustable desk with memory presets."),
        ("Ergonomic Office Chair with Lumbar Support", "Chairs", "Mesh chair with adjustable arms."),
        ("27 inch Monitor Arm", "Monitor Mounts", "Gas-spring arm that frees desk space."),
        ("Wireless Keyboard and Mouse Combo", "Input Devices", "Quiet keys and a long battery life."),
        ("USB-C Docking Station", "Docks", "One cable for screens, power and network."),
        ("LED Desk Lamp with Dimmer", "Lighting", "Glare-free light for long days."),
        ("HD Webcam with Microphone", "Webcams", "Clear video for meetings."),
        ("Cable Management Tray", "Organization", "Hides cables under the desk."),
        ("Anti-Fatigue Standing Mat", "Mats", "Cushions feet at a standing desk."),
    )),
    _Motivation("welcoming a new kitten", ("Pet Supplies", "Cats"),
                ("Whiskerly", "Purrfect Co", "Catnap"), (
        ("Kitten Dry Food, Chicken Recipe", "Food", "Complete food for growing kittens."),
        ("Covered Litter Box", "Litter Boxes", "Hooded box that contains odours."),
        ("Clumping Cat Litter, 20 lb", "Litter", "Low-dust clumping clay."),
        ("Cat Scratching Post", "Scratchers", "Sisal post to save the furniture."),
        ("Interactive Feather Wand Toy", "Toys", "Keeps kittens active and playful."),
        ("Soft-Sided Cat Carrier", "Carriers", "Carrier for vet visits."),
        ("Cat Tree with Condo", "Furniture", "Climbing tower with a hideaway."),
        ("Kitten Nail Clippers", "Grooming", "Small clippers for soft claws."),
        ("Ceramic Cat Water Fountain", "Feeding", "Flowing water that cats drink more of."),
    )),
    _Motivation("training a new puppy", ("Pet Supplies", "Dogs"),
                ("Pawsmart", "Barkley", "Goodboy"), (
        ("Puppy Training Pads, 100 Count", "Housebreaking", "Leak-proof pads for house training."),
        ("Wire Dog Crate with Divider", "Crates", "Crate that grows with the puppy."),
        ("Soft Training Treats", "Treats", "Small treats for positive reinforcement."),
        ("Training Clicker with Wrist Strap", "Training", "Marks good behaviour the moment it happens."),
        ("Adjustable Puppy Harness and Leash", "Leashes", "No-pull harness for first walks."),
        ("Puppy Teething Chew Toys", "Toys", "Soothes gums and saves shoes."),
        ("Enzyme Stain and Odor Remover", "Cleaning", "Removes accident smells so puppies do not return."),
        ("Treat Pouch for Training", "Training", "Keeps treats at hand on walks."),
        ("Long Training Lead 30 ft", "Leashes", "Practice recall safely in open spaces."),
    )),
    _Motivation("learning watercolor painting", ("Arts, Crafts & Sewing", "Painting, Drawing & Art Supplies"),
                ("Aquarelle", "Brushmark", "Paperleaf"), (
        ("Watercolor Paint Set, 24 Half Pans", "Paints", "Artist pigments in a travel tin."),
        ("Round Watercolor Brush Set", "Brushes", "Synthetic sable brushes in five sizes."),
        ("Cold Press Watercolor Paper Pad", "Paper", "Heavy 140 lb paper that does not buckle."),
        ("Porcelain Mixing Palette", "Palettes", "Wells that do not stain."),
        ("Masking Fluid", "Mediums", "Saves white areas of the paper."),
        ("Water Brush Pens, 6 Pack", "Brushes", "Refillable brushes for painting outdoors."),
        ("Artist Masking Tape", "Tape", "Holds paper flat and leaves a clean edge."),
        ("Watercolor Techniques Book for Beginners", "Books", "Step-by-step lessons and exercises."),
    )),
    _Motivation("doing my own car maintenance", ("Automotive", "Tools & Equipment"),
                ("Gearwell", "Torqline", "Motorcare"), (
        ("Hydraulic Floor Jack 3 Ton", "Jacks", "Low-profile jack for cars and SUVs."),
        ("Jack Stands, 3 Ton Pair", "Jack Stands", "Holds the car safely while you work."),
        ("Oil Filter Wrench Set", "Hand Tools", "Removes stuck oil filters."),
        ("Oil Drain Pan 15 qt", "Oil Change", "Pan with a spout for recycling used oil."),
        ("Full Synthetic Motor Oil 5W-30, 5 qt", "Oil", "Protects engines between changes."),
        ("Click Torque Wrench 1/2 inch", "Hand Tools", "Tightens lug nuts to spec."),
        ("OBD2 Code Reader", "Diagnostics", "Reads check-engine codes."),
        ("Creeper Rolling Board", "Garage", "Slide under the car comfortably."),
        ("Brake Cleaner Spray", "Chemicals", "Cleans brake parts before reassembly."),
    )),
    _Motivation("fermenting vegetables and kombucha at home", ("Home & Kitchen", "Canning & Fermenting"),
                ("Brinewell", "Culturo", "Jarworks"), (
        ("Fermentation Kit for Mason Jars", "Kits", "Airlock lids and glass weights for jars."),
        ("Wide Mouth Mason Jars, 6 Pack", "Jars", "Half-gallon jars for krautchi and pickles."),
        ("Pure Sea Salt for Fermenting", "Ingredients", "Iodine-free salt for brines."),
        ("Kombucha SCOBY Starter", "Cultures", "Live culture with starter tea."),
        ("Glass Kombucha Brewing Jar 1 Gallon", "Jars", "Jar with a spigot and cloth cover."),
        ("pH Test Strips for Fermentation", "Testing", "Checks that ferments are safely acidic."),
        ("Wooden Cabbage Pounder", "Tools", "Packs cabbage to release brine."),
        ("Flip-Top Bottles for Second Fermentation", "Bottles", "Builds carbonation in kombucha."),
    )),
    _Motivation("stargazing with a first telescope", ("Electronics", "Camera & Photo"),
                ("Starward", "Orbisight", "Nightsky"), (
        ("70mm Refractor Telescope for Beginners", "Telescopes", "Light, quick-to-set-up scope with a tripod."),
        ("Planisphere Star Finder", "Astronomy Accessories", "Shows which stars are up tonight."),
        ("Red Light Astronomy Flashlight", "Astronomy Accessories", "Preserves night vision while reading charts."),
        ("Telescope Eyepiece and Filter Kit", "Eyepieces", "Extra magnifications and a moon filter."),
        ("Smartphone Telescope Adapter", "Astrophotography", "Snap photos through the eyepiece."),
        ("Binoculars 10x50 for Astronomy", "Binoculars", "Wide views of star clusters."),
        ("Star Atlas for Amateur Astronomers", "Books", "Charts for finding deep-sky objects."),
        ("Telescope Dew Heater Strip", "Astronomy Accessories", "Keeps the lens clear on damp nights."),
    )),
)

#: products that serve several motivations: (product, category path, description, motivation names)
_SHARED: tuple[tuple[str, tuple[str, ...], str, tuple[str, ...]], ...] = (
    ("Digital Multimeter", ("Industrial & Scientific", "Test & Measurement"), "Measures voltage, current and "
     "continuity.", ("learning electronics soldering", "doing my own car maintenance", "3D printing as a hobby")),
    ("Aquarium-Safe Silicone Sealant", ("Tools & Home Improvement", "Building Supplies", "Sealants"),
     "100% silicone that cures watertight and non-toxic.",
     ("setting up a first freshwater aquarium", "waterproofing a damp basement")),
    ("Digital Kitchen Scale 0.1 g", ("Home & Kitchen", "Kitchen Utensils", "Scales"), "Weighs to a tenth of a "
     "gram.", ("making espresso at home", "baking sourdough bread", "making cold-process soap")),
    ("Full Spectrum LED Grow Light", ("Patio, Lawn & Garden", "Indoor Gardening", "Grow Lights"),
     "Full-spectrum light for seedlings and plants indoors.",
     ("starting a vegetable garden", "caring for indoor houseplants")),
    ("Nitrile Gloves, 100 Count", ("Industrial & Scientific", "Safety", "Gloves"), "Disposable gloves that "
     "resist oils and chemicals.", ("3D printing as a hobby", "making cold-process soap",
                                    "doing my own car maintenance")),
    ("Digital Hygrometer Thermometer", ("Home & Kitchen", "Climate Control", "Hygrometers"), "Shows room "
     "temperature and humidity.", ("waterproofing a damp basement", "preparing a baby's nursery",
                                   "fermenting vegetables and kombucha at home")),
    ("LED Headlamp, Rechargeable", ("Sports & Outdoors", "Camping & Hiking", "Lights"), "Hands-free light with "
     "a red mode.", ("family tent camping", "stargazing with a first telescope")),
    ("Instant-Read Digital Thermometer", ("Home & Kitchen", "Kitchen Utensils", "Thermometers"), "Reads "
     "temperature in three seconds.", ("home brewing beer", "making cold-process soap", "baking sourdough bread")),
    ("Half-Face Respirator with Filters", ("Industrial & Scientific", "Safety", "Respirators"), "Filters dust "
     "and vapours.", ("beginner woodworking", "3D printing as a hobby", "waterproofing a damp basement")),
    ("Collapsible Water Bowl Set", ("Pet Supplies", "Dogs", "Bowls"), "Travel bowls for food and water.",
     ("training a new puppy", "family tent camping")),
)

#: everyday items anyone buys; they serve no particular motivation
_GENERIC: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("AA Alkaline Batteries, 24 Pack", ("Health & Household", "Batteries"), "Long-lasting everyday batteries."),
    ("AAA Alkaline Batteries, 16 Pack", ("Health & Household", "Batteries"), "For remotes and small devices."),
    ("Heavy Duty Packing Tape, 6 Rolls", ("Office Products", "Tape"), "Clear tape for boxes and moving."),
    ("Duct Tape, Silver 60 yd", ("Tools & Home Improvement", "Tape"), "Strong all-purpose repair tape."),
    ("Microfiber Cleaning Cloths, 24 Pack", ("Home & Kitchen", "Cleaning"), "Lint-free cloths for any surface."),
    ("Zip Ties Assorted, 500 Pack", ("Tools & Home Improvement", "Fasteners"), "Nylon ties for cables and more."),
    ("Extension Cord 25 ft", ("Tools & Home Improvement", "Electrical"), "Three-outlet indoor cord."),
    ("LED Flashlight, 2 Pack", ("Tools & Home Improvement", "Lighting"), "Bright, water-resistant flashlights."),
    ("Storage Bins with Lids, 4 Pack", ("Home & Kitchen", "Storage"), "Stackable clear bins."),
    ("Paper Towels, 6 Rolls", ("Health & Household", "Paper"), "Absorbent two-ply towels."),
    ("Work Gloves, Medium", ("Tools & Home Improvement", "Safety"), "Breathable gloves for chores."),
    ("Reusable Shopping Bags, 5 Pack", ("Home & Kitchen", "Storage"), "Foldable grocery totes."),
    ("Phone Charging Cable 6 ft, 3 Pack", ("Electronics", "Cables"), "Braided USB charging cables."),
    ("Super Glue Gel, 4 Pack", ("Tools & Home Improvement", "Adhesives"), "Precise, fast-setting glue."),
)
_GENERIC_BRANDS = ("Everyday Basics", "HomeSpark", "Utilito")
# fmt: on

_EXTRA_SENTENCES = (
    "Easy to set up for first-time users.",
    "Backed by a one-year {brand} warranty.",
    "Built to last with durable materials.",
    "Compact design that stores away easily.",
    "A favourite of hobbyists and pros alike.",
    "Comes with clear instructions.",
)
_VARIANT_SUFFIXES = ("Value Pack", "Pro Series", "Compact", "2-Pack", "Premium Edition", "Starter Edition")
_FIRST_NAMES = ("Alex", "Sam", "Jordan", "Taylor", "Morgan", "Casey", "Jamie", "Riley", "Avery", "Quinn",
                "Dana", "Robin", "Chris", "Pat", "Lee", "Kim", "Maria", "John", "Priya", "Wei")
_SUMMARIES = {1: "Disappointed", 2: "Not great", 3: "It's okay", 4: "Works well", 5: "Five Stars"}
_RATING_CDF = np.cumsum([0.03, 0.05, 0.12, 0.30, 0.50])[:-1]  # ratings skew high, as on Amazon
_NOISE_RATING_CDF = np.cumsum([0.15, 0.15, 0.25, 0.25, 0.20])[:-1]  # off-motivation buys please less
_ID_CHARS = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"))


@dataclass(frozen=True)
class DemoManifest:
    """What ``write_demo_dataset`` wrote."""

    out_dir: Path
    reviews_path: Path
    meta_path: Path
    motivations_path: Path
    seed: int
    n_users: int
    n_items: int
    n_interactions: int
    n_motivations: int


@dataclass
class _Item:
    asin: str
    title: str
    description: list[str]
    category: list[str]
    brand: str
    price: str
    motivations: list[int]  # indexes into the catalogue; empty for generic items
    stage: float  # position in the usual buying order of its motivation (0 = starter)
    popularity: float


def write_demo_dataset(out_dir: Path, seed: int = 7, n_users: int = 600, min_length: int = 6,
                       max_length: int = 30, n_motivations: int | None = None) -> DemoManifest:
    """Write ``Demo.json.gz``, ``meta_Demo.json.gz`` and ``motivations.json`` into ``out_dir``.

    The same arguments always give byte-identical files; each file is replaced atomically, so readers in
    other processes never see a half-written file.
    """
    if n_users < 1:
        raise ValueError(f"n_users must be >= 1, got {n_users}")
    if n_motivations is not None and not 2 <= n_motivations <= len(_CATALOGUE):
        raise ValueError(f"n_motivations must be in [2, {len(_CATALOGUE)}], got {n_motivations}")
    catalogue = _CATALOGUE[: n_motivations or len(_CATALOGUE)]
    if not 2 <= min_length <= max_length:
        raise ValueError(f"need 2 <= min_length <= max_length, got {min_length}, {max_length}")
    rng = np.random.default_rng(seed)
    items = _make_items(rng, catalogue)
    users, reviews = _make_users(rng, items, n_users, min_length, max_length, len(catalogue))

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    reviews.sort(key=lambda r: (r["asin"], r["unixReviewTime"], r["reviewerID"]))  # the dumps group by item
    _write_gzip_lines(out_dir / REVIEWS_FILE, reviews)
    _write_gzip_lines(out_dir / META_FILE, [_meta_record(item) for item in items])
    truth = {
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "n_users": n_users,
        "n_motivations": len(catalogue),
        "min_length": min_length,
        "max_length": max_length,
        "motivations": [
            {"id": _motivation_id(m), "name": motivation.name,
             "items": [it.asin for it in items if m in it.motivations]}
            for m, motivation in enumerate(catalogue)
        ],
        "generic_items": [it.asin for it in items if not it.motivations],
        "item_stage": {it.asin: it.stage for it in items if it.motivations},
        "users": users,
    }
    _write_atomic(out_dir / MOTIVATIONS_FILE, (json.dumps(truth, indent=1) + "\n").encode())
    return DemoManifest(out_dir=out_dir, reviews_path=out_dir / REVIEWS_FILE, meta_path=out_dir / META_FILE,
                        motivations_path=out_dir / MOTIVATIONS_FILE, seed=seed, n_users=n_users,
                        n_items=len(items), n_interactions=len(reviews), n_motivations=len(catalogue))


def demo_files_exist(out_dir: Path, seed: int | None = None, n_users: int | None = None,
                     n_motivations: int | None = None) -> bool:
    """True when the demo files are in ``out_dir`` (and, when given, were made with these parameters)."""
    out_dir = Path(out_dir)
    if not all((out_dir / name).is_file() for name in (REVIEWS_FILE, META_FILE, MOTIVATIONS_FILE)):
        return False
    if seed is None and n_users is None and n_motivations is None:
        return True
    try:
        truth = read_motivations(out_dir)
    except (OSError, ValueError):
        return False
    return (truth.get("generator_version") == GENERATOR_VERSION
            and (seed is None or truth.get("seed") == seed)
            and (n_users is None or truth.get("n_users") == n_users)
            and (n_motivations is None or truth.get("n_motivations", len(_CATALOGUE)) == n_motivations))


def demo_motivation_names() -> list[str]:
    """Names of every hidden motivation the generator knows, in catalogue order."""
    return [m.name for m in _CATALOGUE]


def read_motivations(out_dir: Path) -> dict[str, Any]:
    """The hidden ground truth of a demo folder (tests and analysis only; the pipeline never reads it).

    Keys: ``motivations`` (id, name, items), ``generic_items``, ``item_stage`` (asin -> position in the
    usual buying order, 0 = starter), ``users`` (reviewerID -> list of ``{"motivation": id,
    "from_position": int}`` in the order the user pursued them; positions index the user's chronological
    sequence), and the generation parameters.
    """
    return json.loads((Path(out_dir) / MOTIVATIONS_FILE).read_text())


def _motivation_id(index: int) -> str:
    return f"M{index + 1:02d}"


def _make_items(rng: np.random.Generator, catalogue: tuple[_Motivation, ...] = _CATALOGUE) -> list[_Item]:
    asins = _unique_ids(rng, "B0", 8, 4 * sum(len(m.products) for m in _CATALOGUE) + 100)
    items: list[_Item] = []
    by_name = {m.name: i for i, m in enumerate(catalogue)}

    def add(title: str, description: list[str], category: list[str], brand: str, motivations: list[int],
            stage: float) -> None:
        items.append(_Item(asin=asins[len(items)], title=title, description=description, category=category,
                           brand=brand, price=f"${rng.uniform(6, 180):.2f}", motivations=motivations,
                           stage=stage, popularity=float(rng.lognormal(0.0, 0.6))))

    for m, motivation in enumerate(catalogue):
        for stage, (product, leaf, sentence) in enumerate(motivation.products):
            n_variants = 1 + int(rng.random() < 0.65)
            brands = rng.permutation(len(motivation.brands))[:n_variants]
            for v, b in enumerate(brands):
                brand = motivation.brands[int(b)]
                suffix = "" if v == 0 else f", {_VARIANT_SUFFIXES[int(rng.integers(len(_VARIANT_SUFFIXES)))]}"
                add(f"{brand} {product}{suffix}", _description(rng, sentence, brand),
                    [*motivation.category, leaf], brand, [m], float(stage))
    for product, category, sentence, served in _SHARED:
        brand = _GENERIC_BRANDS[int(rng.integers(len(_GENERIC_BRANDS)))]
        served = tuple(name for name in served if name in by_name)
        if not served:  # its motivations are not in this (smaller) catalogue
            continue
        # shared tools are mid-journey purchases: bought once the hobby is under way
        add(f"{brand} {product}", _description(rng, sentence, brand), list(category), brand,
            [by_name[name] for name in served], 3.0)
    for product, category, sentence in _GENERIC:
        brand = _GENERIC_BRANDS[int(rng.integers(len(_GENERIC_BRANDS)))]
        add(f"{brand} {product}", _description(rng, sentence, brand), list(category), brand, [], 0.0)
        items[-1].popularity *= 3.0  # generic items are the store's best sellers
    return items


def _description(rng: np.random.Generator, sentence: str, brand: str) -> list[str]:
    parts = [sentence]
    if rng.random() < 0.7:
        parts.append(_EXTRA_SENTENCES[int(rng.integers(len(_EXTRA_SENTENCES)))].format(brand=brand))
    if rng.random() < 0.15:
        # a little of the HTML the real dumps are full of, so the loader's cleaning is exercised
        return [f"<b>{brand}</b> &amp; you: {parts[0]}<br>{' '.join(parts[1:])}".strip()]
    return [" ".join(parts)]


def _make_users(rng: np.random.Generator, items: list[_Item], n_users: int, min_length: int,
                max_length: int, n_motivations: int = len(_CATALOGUE),
                ) -> tuple[dict[str, list[dict[str, Any]]], list[dict[str, Any]]]:
    serving = [[i for i, it in enumerate(items) if m in it.motivations] for m in range(n_motivations)]
    stage = np.array([it.stage for it in items])
    generic = np.array([i for i, it in enumerate(items) if not it.motivations])
    popularity = np.array([it.popularity for it in items])
    # some hobbies are more common than others, mildly, so every one keeps enough buyers for 5-core
    motivation_weight = rng.permutation(np.arange(1, n_motivations + 1) ** -0.3)
    motivation_weight /= motivation_weight.sum()
    reviewer_ids = _unique_ids(rng, "A", 13, n_users)
    # per-user draws in bulk (one numpy call each, not one per user)
    n_pursued_all = 1 + ((rng.random(n_users) < _TWO_MOTIVATION_SHARE) & (max_length >= 2))
    # distinct motivations per user, weighted: the smallest exponential keys / weight win
    pursued_all = np.argsort(rng.exponential(size=(n_users, n_motivations)) / motivation_weight, axis=1)[:, :2]
    lengths = np.clip(np.round(rng.lognormal(np.log(9.0 * n_pursued_all ** 0.6), 0.45)), min_length, max_length)
    generic_all = rng.binomial(lengths.astype(np.int64), _GENERIC_SHARE)
    noise_all = rng.binomial(lengths.astype(np.int64), _NOISE_SHARE)

    users: dict[str, list[dict[str, Any]]] = {}
    reviews: list[dict[str, Any]] = []
    for u, reviewer_id in enumerate(reviewer_ids):
        n_pursued, length = int(n_pursued_all[u]), int(lengths[u])
        pursued = pursued_all[u, :n_pursued]
        # every pursued motivation gets at least one purchase; generic and random items fill the rest
        n_generic = min(int(generic_all[u]), max(0, length - n_pursued))
        n_noise = min(int(noise_all[u]), max(0, length - n_pursued - n_generic))
        n_focus = length - n_generic - n_noise
        # split the focused purchases between the pursued motivations, in pursuit order
        shares = np.full(n_pursued, n_focus // n_pursued)
        shares[: n_focus % n_pursued] += 1
        sequence: list[int] = []
        owners: list[str | None] = []  # the motivation each purchase serves; None for generic/noise
        for m, share in zip(pursued, shares, strict=True):
            bought = set(sequence)
            candidates = np.array([i for i in serving[int(m)] if i not in bought], dtype=np.int64)
            share = min(int(share), len(candidates))
            chosen = _weighted_sample(rng, candidates, popularity, share)
            stages = stage[chosen] + rng.normal(0.0, 1.2, size=share)
            sequence.extend(int(i) for i in chosen[np.argsort(stages, kind="stable")])
            owners.extend([_motivation_id(int(m))] * share)
        extras = _pick_extras(rng, generic, popularity, n_generic, set(sequence))
        n_noise = max(n_noise, min_length - len(sequence) - len(extras))  # when a motivation ran out of items
        noise = _pick_extras(rng, np.arange(len(items)), popularity, n_noise, set(sequence) | set(extras))
        kinds = ["focus"] * len(sequence)
        for item, kind in [(i, "generic") for i in extras] + [(i, "noise") for i in noise]:
            position = int(rng.integers(len(sequence) + 1))
            sequence.insert(position, item)
            kinds.insert(position, kind)
            owners.insert(position, None)
        # the first motivation counts from the start, a later one from its first purchase
        segments = [{"motivation": _motivation_id(int(m)),
                     "from_position": 0 if k == 0 else owners.index(_motivation_id(int(m)))}
                    for k, m in enumerate(pursued)]
        users[reviewer_id] = segments
        reviews.extend(_reviews(rng, reviewer_id, [items[i] for i in sequence], kinds))
    return users, reviews


def _pick_extras(rng: np.random.Generator, pool: np.ndarray, popularity: np.ndarray, k: int,
                 exclude: set[int]) -> list[int]:
    allowed = np.ones(len(popularity), dtype=bool)
    allowed[list(exclude)] = False
    candidates = pool[allowed[pool]]
    return [int(i) for i in _weighted_sample(rng, candidates, popularity, min(k, len(candidates)))]


def _weighted_sample(rng: np.random.Generator, candidates: np.ndarray, popularity: np.ndarray,
                     k: int) -> np.ndarray:
    """``k`` distinct candidates drawn with probability proportional to popularity, in draw order."""
    # exponential keys / weight, smallest first: weighted sampling without replacement in one sort
    keys = rng.exponential(1.0, size=len(candidates)) / popularity[candidates]
    return candidates[np.argsort(keys, kind="stable")[:k]]


def _reviews(rng: np.random.Generator, reviewer_id: str, bought: list[_Item],
             kinds: list[str]) -> list[dict[str, Any]]:
    start = _START + int(rng.integers(_LAST_START - _START))
    gaps = 3600 + rng.exponential(12 * 86400, size=len(bought)).astype(np.int64)
    times = start + np.cumsum(gaps)
    if times[-1] > _END:  # squeeze long sequences into the window, keeping every gap positive
        times = start + np.cumsum(np.maximum(1, gaps * (_END - start) // int(times[-1] - start)))
    name = f"{_FIRST_NAMES[int(rng.integers(len(_FIRST_NAMES)))]} {chr(65 + int(rng.integers(26)))}."
    noisy = np.array([kind == "noise" for kind in kinds])
    draws = rng.random(len(bought))
    ratings = 1 + np.where(noisy, np.searchsorted(_NOISE_RATING_CDF, draws, side="right"),
                           np.searchsorted(_RATING_CDF, draws, side="right"))
    verified = rng.random(len(bought)) < 0.9
    records = []
    for item, rating, is_verified, when in zip(bought, ratings.tolist(), verified.tolist(), times.tolist(),
                                               strict=True):
        day = time.gmtime(when)
        records.append({
            "overall": float(rating), "verified": is_verified,
            "reviewTime": f"{day.tm_mon:02d} {day.tm_mday}, {day.tm_year}", "reviewerID": reviewer_id,
            "asin": item.asin, "reviewerName": name, "summary": _SUMMARIES[rating], "unixReviewTime": when,
        })
    return records


def _meta_record(item: _Item) -> dict[str, Any]:
    return {"category": item.category, "description": item.description, "title": item.title,
            "brand": item.brand, "main_cat": item.category[0], "price": item.price, "asin": item.asin,
            "imageURL": [], "imageURLHighRes": []}


def _unique_ids(rng: np.random.Generator, prefix: str, length: int, count: int) -> list[str]:
    ids: list[str] = []
    seen: set[str] = set()
    while len(ids) < count:
        for row in _ID_CHARS[rng.integers(len(_ID_CHARS), size=(count, length))]:
            candidate = prefix + "".join(row)
            if candidate not in seen and len(ids) < count:
                seen.add(candidate)
                ids.append(candidate)
    return ids


def _write_gzip_lines(path: Path, records: list[dict[str, Any]]) -> None:
    payload = "".join(json.dumps(r) + "\n" for r in records).encode()
    # mtime=0 and no file name in the header: the same records give the same bytes
    _write_atomic(path, gzip.compress(payload, compresslevel=6, mtime=0))


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
