"""Privacy and communication of client uploads: compression, user-level DP with accounting, secure aggregation.

See docs/privacy.md for the threat model, the math and the accountant.
"""

from lightning_asyncfl.privacy.accounting import UserLevelAccountant, rdp_epsilon
from lightning_asyncfl.privacy.channel import UploadChannel
from lightning_asyncfl.privacy.compression import QSGD, Compressor, HalfPrecision, TopK
from lightning_asyncfl.privacy.dp import UserLevelDP, clip_to_norm
from lightning_asyncfl.privacy.dpsgd import DPSGD
from lightning_asyncfl.privacy.secagg import SecureAggregation

__all__ = ["DPSGD", "QSGD", "Compressor", "HalfPrecision", "SecureAggregation", "TopK", "UploadChannel", "UserLevelAccountant",
           "UserLevelDP", "clip_to_norm", "rdp_epsilon"]
