from iotnas.cli.main import run

run()
