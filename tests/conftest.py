import fastoptim


def pytest_report_header(config):
    cfg = fastoptim._config.config()
    isa = cfg.get("isa_in_use", "-")
    return f"fastoptim {fastoptim.__version__}: backend={cfg['backend']} isa={isa} threads={cfg.get('threads', 1)}"
