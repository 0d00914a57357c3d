"""The user events of a simulation: registrations, logins and logouts, profile updates."""

from __future__ import annotations

import math

from loadgen.catalog import (
    CITIES,
    DAY,
    DEVICE_AGENTS,
    DEVICES,
    FIRST_NAMES,
    LAST_NAMES,
    MINUTE,
    SECOND,
    TIMEZONES,
)
from loadgen.state import Session, Tenant, User
from loadgen.world import WorldBase


class PeopleEvents(WorldBase):
    """Users register, log in (in sessions), log out and update their profile."""

    def register(self, now: int, tenant: Tenant) -> None:
        rng = self.rng
        user = tenant.pending.pop()
        user.registered_at = now
        tenant.registered.append(user)
        data = {
            "user_id": user.user_id,
            "email": user.email,
            "tenant_slug": tenant.slug,
            "registration_method": user.registration_method,
            "referral_source": user.referral_source,
        }
        self.emit(now, tenant, "user.registered", user.user_id, data, self.user_ctx(user, now))
        if rng.random() < (0.5 if user.is_staff else 0.8):
            self.later(now + rng.randint(5 * SECOND, 3 * MINUTE), self.login, tenant, user)

    def pick_returning_user(self, now: int, tenant: Tenant) -> User | None:
        """A registered user without a session, favouring active and recently joined users."""
        rng = self.rng
        registered = tenant.registered
        for _attempt in range(12):
            user = rng.choice(registered)
            session = user.session
            if session is not None and session.ends > now:
                continue
            age_days = (now - user.registered_at) / DAY
            if rng.random() < user.activity / (1.0 + age_days / 14.0):
                return user
        return None

    def login(self, now: int, tenant: Tenant, user: User | None) -> bool:
        rng = self.rng
        if user is None:
            user = self.pick_returning_user(now, tenant)
            if user is None:
                # Everyone likely to log in is online already (a dense stream for the
                # number of users): someone leaves now, so sessions shorten rather than
                # the stream turning into one endless session per user.
                leaving = self.online_customer(now, tenant)
                if leaving is None or leaving.session is None:
                    return False
                if now - leaving.session.started < MINUTE:
                    return False
                self.logout(now, tenant, leaving, leaving.session)
                return True
        elif user.session is not None and user.session.ends > now:
            return False
        if rng.random() < 0.85:
            device, agent = user.device_type, user.user_agent
        else:
            device = rng.choice(DEVICES)
            agent = rng.choice(DEVICE_AGENTS[device])
        ip = user.ip if rng.random() < 0.8 else self._ip()
        seconds = min(6 * 3600.0, max(20.0, rng.lognormvariate(math.log(900.0), 0.9)))
        session = Session(self.uid(), ip, agent, device, now, now + int(seconds * SECOND))
        user.session = session
        if user.is_staff:
            method = "sso" if rng.random() < 0.5 else "password"
        elif user.registration_method in ("google", "apple", "facebook"):
            method = user.registration_method
        else:
            method = "password" if rng.random() < 0.85 else "magic_link"
        country, city = user.home if rng.random() < 0.85 else rng.choice(CITIES)
        data = {
            "user_id": user.user_id,
            "login_method": method,
            "device_type": device,
            "location": {"country": country, "city": city},
        }
        ctx = (ip, agent, session.session_id)
        self.emit(now, tenant, "user.logged_in", user.user_id, data, ctx)
        if not user.is_staff:
            tenant.online.append(user)
        if rng.random() < 0.82:  # the rest let the session expire without a logout
            self.later(session.ends, self.logout, tenant, user, session)
        return True

    def logout(self, now: int, tenant: Tenant, user: User, session: Session) -> None:
        if user.session is not session:
            return
        user.session = None
        data = {
            "user_id": user.user_id,
            "session_duration_seconds": (now - session.started) // SECOND,
        }
        ctx = (session.ip, session.user_agent, session.session_id)
        self.emit(now, tenant, "user.logged_out", user.user_id, data, ctx)

    def online_customer(self, now: int, tenant: Tenant) -> User | None:
        rng, online = self.rng, tenant.online
        for _attempt in range(8):
            if not online:
                return None
            index = rng.randrange(len(online))
            user = online[index]
            session = user.session
            if session is not None and session.ends > now:
                return user
            online[index] = online[-1]
            online.pop()
        return None

    def update_profile(self, now: int, tenant: Tenant) -> bool:
        rng = self.rng
        user = self.online_customer(now, tenant)
        if user is None:
            return False
        fields = [
            name for name in ("first_name", "last_name", "phone", "timezone") if rng.random() < 0.45
        ] or [rng.choice(("phone", "last_name", "timezone"))]
        previous: dict[str, str] = {}
        new: dict[str, str] = {}
        for name in fields:
            previous[name] = getattr(user, name)
            if name == "first_name":
                value = rng.choice(FIRST_NAMES)
            elif name == "last_name":
                value = rng.choice(LAST_NAMES)
            elif name == "phone":
                value = f"+1-555-01{rng.randrange(100):02d}"
            else:
                value = rng.choice(TIMEZONES)
            setattr(user, name, value)
            new[name] = value
        data = {
            "user_id": user.user_id,
            "fields_updated": fields,
            "previous_values": previous,
            "new_values": new,
        }
        self.emit(now, tenant, "user.profile_updated", user.user_id, data, self.user_ctx(user, now))
        return True
