"""The per-call key: one random key per connected call, escrowed to the compliance officer's public key, and kept
sealed for the call's device to claim over the device API.

- `escrow`: HPKE sealing to the escrow public key and the key files (pure apart from the files);
- `vouchers`: how a call key is sealed for release and how a claimed number finds its call (pure);
- `book`: the escrowed rows and the call records in the store, the escrow key reloaded when its file changes;
- `store`: the vouchers' store half (add, release, end, purge);
- `service`: `CallKeys`, what inbound admission, the outbound controller and the device API use, built once.
"""
