from tests.proxy.boots import boots  # noqa: F401  (fixture)
