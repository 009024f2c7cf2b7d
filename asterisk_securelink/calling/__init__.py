"""Where an admitted call goes (CALLING.md, "Where an admitted call goes", "Callback", "Call records").

- `identity`: a device's routing identity (context, caller ID) and where each value came from;
- `guard`: the guard against toll fraud, the pure destination rules (`core.tollguard`) with the shared store's
  counts (`store.routes`);
- `dialtone`: the digits of the app's own dial tone (pure);
- `onward`: an admitted call from its verdict to `[securelink-admitted]`, and followed to its end (call record,
  lease released);
- `callback`: the PBX calls the phone back, waits for its confirmation, then dials the destination.
"""
