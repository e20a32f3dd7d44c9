"""Traffic-signal control on SUMO (sumo-rl + libsumo): env ``sumo:<net>``, rule controllers, plots.

Importing this package does not import SUMO; :mod:`envs.traffic.env` does, through
:func:`envs.traffic.sumo_setup.import_sumo`, which sets ``SUMO_HOME``/``LIBSUMO_AS_TRACI`` and
patches pettingzoo for sumo-rl 1.4.5 first.
"""
