"""The layering the house keeps, checked on the import statements of the tree (every one, also inside functions):

* the kit (``unionhub_kit``) knows no service and no gateway;
* a service knows no other service and no gateway;
* the gateway knows a service only by its contract (``services.<name>.schemas`` and what that imports), never its
  domain rules, store, search or service class; the contract modules import no domain, store or service module.
"""
import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SERVICES = sorted(n for n in os.listdir(os.path.join(ROOT, "services"))
                  if os.path.isfile(os.path.join(ROOT, "services", n, "__init__.py")))
FORBIDDEN_TO_GATEWAY = ("domain", "store", "service", "search")


def module_of(path):
    rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
    return rel[:-len(".__init__")] if rel.endswith(".__init__") else rel


def files(package):
    for dirpath, _, names in os.walk(os.path.join(ROOT, package)):
        for name in names:
            if name.endswith(".py"):
                yield os.path.join(dirpath, name)


def imports(path):
    """Every module ``path`` imports (absolute names; ``from x import y`` counts as x and x.y)."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    here = module_of(path)
    package = here if path.endswith("__init__.py") else here.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module
            out.add(mod)
            out.update("%s.%s" % (mod, a.name) for a in node.names)
    return out


def top(name, depth):
    return ".".join(name.split(".")[:depth])


def test_the_kit_imports_no_service_and_no_gateway():
    bad = {(module_of(p), m) for p in files("unionhub_kit") for m in imports(p)
           if top(m, 1) in ("services", "gateway")}
    assert not bad, bad


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_imports_no_other_service_and_no_gateway(service):
    bad = {(module_of(p), m) for p in files(os.path.join("services", service)) for m in imports(p)
           if top(m, 1) == "gateway" or (top(m, 1) == "services" and top(m, 2) not in ("services", "services.%s"
                                                                                         % service))}
    assert not bad, bad


def _service_modules_reached(start):
    """Modules of services/ reached from the modules ``start`` by following imports (services' own files only)."""
    known = {module_of(p): p for p in files("services")}
    seen, todo = set(), list(start)
    while todo:
        path = todo.pop()
        for m in imports(path):
            while m and m not in known and "." in m:
                m = m.rsplit(".", 1)[0]  # ``from services.x import schemas`` names the module services.x.schemas
            if m in known and m not in seen:
                seen.add(m)
                todo.append(known[m])
    return seen


def test_the_gateway_knows_services_only_by_their_contracts():
    reached = _service_modules_reached(list(files("gateway")))
    assert any(m.endswith(".schemas") for m in reached)  # the gateway does validate with the contracts
    bad = sorted(m for m in reached if m.rsplit(".", 1)[-1] in FORBIDDEN_TO_GATEWAY)
    assert not bad, "the gateway (through the contracts) loads %s" % bad


@pytest.mark.parametrize("service", SERVICES)
def test_contract_modules_import_no_domain_store_or_service(service):
    path = os.path.join(ROOT, "services", service, "schemas.py")
    if not os.path.exists(path):
        pytest.skip("%s has no contract module" % service)
    reached = _service_modules_reached([path])
    bad = sorted(m for m in reached if m.rsplit(".", 1)[-1] in FORBIDDEN_TO_GATEWAY)
    assert not bad, bad


def test_every_process_module_imports():
    """What ``deploy/Procfile`` runs imports (a route or contract naming something that moved fails here, not at
    the first end-to-end test)."""
    import importlib

    from deploy.stack import procfile
    for name, cmd in procfile():
        importlib.import_module(cmd.split()[-1])
