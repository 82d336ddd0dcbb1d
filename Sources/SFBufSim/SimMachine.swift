// The simulated SMP machine lives here.
