"""``fraud-assets chaos``: fault injection and an exact reconciliation under it.

The stream is killed with ``kill -9`` and the Kafka broker stopped during a replay of the
real data; afterwards every sink must hold exactly what batch scoring expects.
"""
