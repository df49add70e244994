"""node-proxy: placeholder until the CLI lands."""
def main() -> None:
    print("node-proxy")
