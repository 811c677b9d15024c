"""Human feedback on generations and SDG rows, exported as preference pairs or SFT examples."""

from winnow.feedback.service import FeedbackService

__all__ = ["FeedbackService"]
