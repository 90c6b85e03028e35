"""Multi-LLM interest mining (MLIM): LLM backends, call cache, item interest mining, miner merge, judges."""
