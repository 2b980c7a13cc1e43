"""Parameterised sets: what a distilled set is stored as when it is not raw pixels (low-dimensional
bases and coefficients, the tiny networks that predict augmented views). Both the methods that learn
them and the artifact decoders that rebuild a set from them import from here, so neither depends on
the other (quantizers play the same role in ``quant/``)."""
