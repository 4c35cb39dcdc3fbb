

# The five services, by the names `cyclone service NAME` takes (cyclone.apps builds them).
SERVICES = ("api", "eventmanager", "workermanager", "logserver", "notifier")
