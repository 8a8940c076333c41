"""The bot's web pages: the dataset upload page (`add_upload_routes`)."""

from bot.web.links import LinkRefused, Refusal, UploadLinks, UploadTicket, UsedLinks
from bot.web.upload import OnDatasetReady, UploadConfig, add_upload_routes, stored_dataset

__all__ = [
    "LinkRefused",
    "OnDatasetReady",
    "Refusal",
    "UploadConfig",
    "UploadLinks",
    "UploadTicket",
    "UsedLinks",
    "add_upload_routes",
    "stored_dataset",
]
