"""Floor 2: taxonomy, cases, cell images, imports, the labeling queue, consensus and agreement.

Knows nothing of models: that is blinding expressed in code. It announces what happened (signals.py:
import_batch_finished) and the floors above subscribe; it imports only core and accounts."""
