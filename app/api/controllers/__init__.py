"""HTTP controllers: parse input, call one service, shape the answer."""
