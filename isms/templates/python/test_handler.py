"""The Doee's test, against the fake context of the ISMS SDK."""
import unittest

import handler
from isms_testing import FakeContext


class GreetsTest(unittest.TestCase):
    def test_greets_whoever_is_named_in_the_body(self):
        ctx = FakeContext(params={"greeting": "Hello"})
        handler.initialize(ctx)
        self.assertEqual(handler.execute(ctx, b"world"), "Hello, world!")
        self.assertEqual(handler.execute(ctx, b""), "Hello, world!")
        self.assertIn(("info", "greeted world"), ctx.logs)


if __name__ == "__main__":
    unittest.main()
