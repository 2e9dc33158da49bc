"""notify service entrypoints (placeholder until its issue lands)."""
from nameko.rpc import rpc

from unionhub_kit.mongo import Mongo
from unionhub_kit.ping import ping as _ping


class NotifyService:
    name = "notify"
    db = Mongo()

    @rpc
    def ping(self):
        return _ping(self.name, self.db)
