"""What the tests share, in one place: a test file imports helpers from here, never from another test file
(tests/test_house_rules.py checks that).

* `keys` - the test master key.
* `clock` - the one settable clock and the reference instant.
* `services` - the one place a `VerificationService` is built, and the inbound helpers around it.
* `vectors` - the spec's test vectors (SLK1.md): the comparison table, the burst, the vector provisioning.
* `fakes`, `deviceapi_fakes`, `outbound`, `agi` - in-process stand-ins for ARI, the device API's ports, the outbound
  controller's store and hooks, a FastAGI peer.
* `ami` - a fake AMI peer (unit tests) and the AMI monitor the end-to-end tests watch Asterisk with.
* `pg` - fresh PostgreSQL databases for the store tests.
* `cli`, `device_cli` - the two commands run as real processes.
"""
