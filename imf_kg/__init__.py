"""IMF link prediction and shared multimodal machinery.

Li et al., "IMF: Interactive Multimodal Fusion Model for Link Prediction", WWW 2023.
"""

__version__ = "0.1.0"
