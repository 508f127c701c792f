"""A simulated clock for time-budget tests (``TimeBudget.clock``)."""


class StepClock:
    """Advances ``rate`` simulated seconds per optimiser step (pass ``step`` as ``on_step``);
    everything else takes no time."""

    def __init__(self, rate: float = 1.0, start: float = 0.0):
        self.now, self.rate = start, rate

    def __call__(self) -> float:
        return self.now

    def step(self, _step) -> None:
        self.now += self.rate
