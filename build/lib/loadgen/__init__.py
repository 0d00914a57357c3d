"""Load generation for the pipeline: synthetic events, the stream simulator, and publishing a
measured stream and checking what the pipeline made of it (`analytics simulate`,
`analytics bench`, the benchmarks and the tests use it; the product never imports it).

The public names of the simulator are re-exported here.
"""

from analytics.events import channel_for
from loadgen.seeds import EVENT_TYPES, SEED_EXAMPLES, envelope, seed_examples
from loadgen.simulator import Simulator

__all__ = [
    "EVENT_TYPES",
    "SEED_EXAMPLES",
    "Simulator",
    "channel_for",
    "envelope",
    "seed_examples",
]
