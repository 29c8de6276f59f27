"""Live trading: journal, feed, brokers, runner, keys."""
