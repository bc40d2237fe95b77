"""Domain adapters: what the kernel's generic resource means in a market (see
:mod:`negotiator.domain`). ``energy`` is the community of :mod:`market`; ``logistics`` trades
delivery slots between shippers and carriers."""
