"""Extensions, created unbound here and bound to an app by the factory (no import cycles)."""

from webapp.common.api import Api
from webapp.database import Database
from webapp.queue import JobQueue
from webapp.storage import ObjectStore
from webapp.throttle import SigninThrottle

db = Database()
api = Api()
store = ObjectStore()
queue = JobQueue()
signin_throttle = SigninThrottle()
