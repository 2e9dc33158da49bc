"""What a service process remembers between its workers (caches, marks), as a nameko dependency.

``memory = ProcessMemory(Factory)`` on a service class gives every worker the same ``Factory()`` object, made when
the container is set up: one per process (per container), never shared between containers and never a module global,
so two containers in one test process (two replicas, or one test's service after another's) start empty and never
see each other's state.
"""
from nameko.extensions import DependencyProvider


class ProcessMemory(DependencyProvider):
    def __init__(self, factory):
        self.factory = factory
        self.value = None

    def setup(self):
        self.value = self.factory()

    def get_dependency(self, worker_ctx):
        return self.value
