"""The site controller: up to 16 strings in parallel on one DC bus, one battery to the outside
(issue 17). `core` decides (pure), `service` wires it to the bus."""
