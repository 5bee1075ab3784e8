# ruff: noqa: E501 - prose in four languages, one string per line
"""What the caller's pages say, in English, French, Dutch and German (pure).

The language comes from ``?lang=`` (the page's switch) or the browser's Accept-Language, else the
link's own (the call's language), else English.
"""

from __future__ import annotations

__all__ = ["LANGS", "TEXTS", "pick_lang", "t"]

LANGS = ("en", "fr", "nl", "de")

TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "lang_name": "English",
        "location_title": "Share your position with the assistance centre",
        "consent": (
            "The assistance centre handling your call asks for your position so that help can find "
            "you. If you agree, your browser will ask for permission and send your current position "
            "(with its accuracy) once, to the centre only. Nothing else is read from your phone. "
            "The position is kept with your case and deleted with it."
        ),
        "share": "Send my position",
        "sending": "Sending your position…",
        "sent": (
            "Thank you. Your position has reached the centre. An operator sees it now and will "
            "keep you informed by phone. You may close this page."
        ),
        "denied": "Your browser did not give a position. Allow location access and try again, or tell the operator where you are.",
        "failed": "The position could not be sent. Please try again, or tell the operator where you are.",
        "gone_title": "This link can no longer be used",
        "gone_body": (
            "This link has expired, was withdrawn, or was already used as often as allowed. "
            "If you still need help, call the assistance centre or 112 in an emergency."
        ),
        "assist_title": "Request breakdown assistance",
        "assist_intro": "Tell us where you are and what happened; we send the nearest available assistance.",
        "where": "Where are you?",
        "use_position": "Use my current position",
        "position_set": "Position received",
        "address": "Or type the address or coordinates",
        "vehicle": "Vehicle (plate and model)",
        "what": "What happened?",
        "what_flat_tyre": "Flat tyre",
        "what_battery": "Battery",
        "what_engine": "Engine problem",
        "what_accident": "Accident without injury",
        "what_locked_out": "Locked out",
        "what_other": "Other",
        "phone": "Your phone number",
        "submit": "Send the request",
        "submitted": "Your request is registered. Follow it here:",
        "follow": "Follow my case",
        "invalid": "Please check:",
        "tracking_title": "Your case",
        "state": "Status",
        "st_dispatching": "Looking for the nearest assistance",
        "st_accepted": "Assistance is on its way",
        "st_unassigned": "An operator is handling your case",
        "st_closed": "Closed",
        "st_open": "Being handled by the centre",
        "st_updated": "Being handled by the centre",
        "st_cancelled": "Cancelled",
        "st_resolved": "Closed",
        "provider": "Assistance",
        "eta": "Expected arrival",
        "minutes": "min",
        "garage": "Garage",
        "replacement": "Replacement vehicle",
        "message": "Message",
        "updated": "Updated",
        "live": "This page updates by itself.",
    },
    "fr": {
        "lang_name": "Français",
        "location_title": "Partagez votre position avec la centrale d'assistance",
        "consent": (
            "La centrale d'assistance qui traite votre appel vous demande votre position afin que "
            "les secours puissent vous trouver. Si vous acceptez, votre navigateur vous demandera "
            "l'autorisation et enverra une fois votre position actuelle (avec sa précision), "
            "uniquement à la centrale. Rien d'autre n'est lu sur votre téléphone. La position est "
            "conservée avec votre dossier et supprimée avec lui."
        ),
        "share": "Envoyer ma position",
        "sending": "Envoi de votre position…",
        "sent": (
            "Merci. Votre position est parvenue à la centrale. Un opérateur la voit maintenant et "
            "vous tiendra informé par téléphone. Vous pouvez fermer cette page."
        ),
        "denied": "Votre navigateur n'a pas donné de position. Autorisez la localisation et réessayez, ou dites à l'opérateur où vous êtes.",
        "failed": "La position n'a pas pu être envoyée. Réessayez, ou dites à l'opérateur où vous êtes.",
        "gone_title": "Ce lien ne peut plus être utilisé",
        "gone_body": (
            "Ce lien a expiré, a été retiré, ou a déjà été utilisé autant de fois que permis. "
            "Si vous avez encore besoin d'aide, appelez la centrale d'assistance, ou le 112 en cas d'urgence."
        ),
        "assist_title": "Demander une assistance dépannage",
        "assist_intro": "Dites-nous où vous êtes et ce qui s'est passé ; nous envoyons l'assistance disponible la plus proche.",
        "where": "Où êtes-vous ?",
        "use_position": "Utiliser ma position actuelle",
        "position_set": "Position reçue",
        "address": "Ou saisissez l'adresse ou les coordonnées",
        "vehicle": "Véhicule (plaque et modèle)",
        "what": "Que s'est-il passé ?",
        "what_flat_tyre": "Pneu crevé",
        "what_battery": "Batterie",
        "what_engine": "Problème moteur",
        "what_accident": "Accident sans blessé",
        "what_locked_out": "Clés enfermées",
        "what_other": "Autre",
        "phone": "Votre numéro de téléphone",
        "submit": "Envoyer la demande",
        "submitted": "Votre demande est enregistrée. Suivez-la ici :",
        "follow": "Suivre mon dossier",
        "invalid": "Veuillez vérifier :",
        "tracking_title": "Votre dossier",
        "state": "État",
        "st_dispatching": "Recherche de l'assistance la plus proche",
        "st_accepted": "L'assistance est en route",
        "st_unassigned": "Un opérateur traite votre dossier",
        "st_closed": "Clôturé",
        "st_open": "En cours de traitement par la centrale",
        "st_updated": "En cours de traitement par la centrale",
        "st_cancelled": "Annulé",
        "st_resolved": "Clôturé",
        "provider": "Assistance",
        "eta": "Arrivée prévue",
        "minutes": "min",
        "garage": "Garage",
        "replacement": "Véhicule de remplacement",
        "message": "Message",
        "updated": "Mis à jour",
        "live": "Cette page se met à jour d'elle-même.",
    },
    "nl": {
        "lang_name": "Nederlands",
        "location_title": "Deel uw positie met de alarmcentrale",
        "consent": (
            "De alarmcentrale die uw oproep behandelt, vraagt uw positie zodat de hulp u kan vinden. "
            "Als u akkoord gaat, vraagt uw browser om toestemming en stuurt hij één keer uw huidige "
            "positie (met de nauwkeurigheid), alleen naar de centrale. Niets anders wordt van uw "
            "telefoon gelezen. De positie wordt bij uw dossier bewaard en ermee gewist."
        ),
        "share": "Mijn positie versturen",
        "sending": "Uw positie wordt verstuurd…",
        "sent": (
            "Dank u. Uw positie is bij de centrale aangekomen. Een operator ziet ze nu en houdt u "
            "telefonisch op de hoogte. U mag deze pagina sluiten."
        ),
        "denied": "Uw browser gaf geen positie. Sta locatietoegang toe en probeer opnieuw, of zeg de operator waar u bent.",
        "failed": "De positie kon niet worden verstuurd. Probeer opnieuw, of zeg de operator waar u bent.",
        "gone_title": "Deze link kan niet meer worden gebruikt",
        "gone_body": (
            "Deze link is verlopen, ingetrokken, of al zo vaak gebruikt als toegestaan. "
            "Hebt u nog hulp nodig, bel dan de alarmcentrale, of 112 in een noodgeval."
        ),
        "assist_title": "Pechhulp aanvragen",
        "assist_intro": "Zeg ons waar u bent en wat er gebeurde; wij sturen de dichtstbijzijnde beschikbare hulp.",
        "where": "Waar bent u?",
        "use_position": "Mijn huidige positie gebruiken",
        "position_set": "Positie ontvangen",
        "address": "Of typ het adres of de coördinaten",
        "vehicle": "Voertuig (nummerplaat en model)",
        "what": "Wat is er gebeurd?",
        "what_flat_tyre": "Lekke band",
        "what_battery": "Batterij",
        "what_engine": "Motorprobleem",
        "what_accident": "Ongeval zonder gewonden",
        "what_locked_out": "Buitengesloten",
        "what_other": "Andere",
        "phone": "Uw telefoonnummer",
        "submit": "Aanvraag versturen",
        "submitted": "Uw aanvraag is geregistreerd. Volg ze hier:",
        "follow": "Mijn dossier volgen",
        "invalid": "Controleer:",
        "tracking_title": "Uw dossier",
        "state": "Status",
        "st_dispatching": "De dichtstbijzijnde hulp wordt gezocht",
        "st_accepted": "De hulp is onderweg",
        "st_unassigned": "Een operator behandelt uw dossier",
        "st_closed": "Afgesloten",
        "st_open": "In behandeling bij de centrale",
        "st_updated": "In behandeling bij de centrale",
        "st_cancelled": "Geannuleerd",
        "st_resolved": "Afgesloten",
        "provider": "Hulpdienst",
        "eta": "Verwachte aankomst",
        "minutes": "min",
        "garage": "Garage",
        "replacement": "Vervangwagen",
        "message": "Bericht",
        "updated": "Bijgewerkt",
        "live": "Deze pagina werkt zichzelf bij.",
    },
    "de": {
        "lang_name": "Deutsch",
        "location_title": "Teilen Sie Ihren Standort mit der Notrufzentrale",
        "consent": (
            "Die Zentrale, die Ihren Anruf bearbeitet, bittet um Ihren Standort, damit die Hilfe Sie "
            "findet. Wenn Sie zustimmen, fragt Ihr Browser um Erlaubnis und sendet einmal Ihren "
            "aktuellen Standort (mit seiner Genauigkeit), nur an die Zentrale. Sonst wird nichts von "
            "Ihrem Telefon gelesen. Der Standort wird mit Ihrem Fall gespeichert und mit ihm gelöscht."
        ),
        "share": "Meinen Standort senden",
        "sending": "Ihr Standort wird gesendet…",
        "sent": (
            "Danke. Ihr Standort ist bei der Zentrale angekommen. Ein Disponent sieht ihn jetzt und "
            "hält Sie telefonisch auf dem Laufenden. Sie können diese Seite schließen."
        ),
        "denied": "Ihr Browser hat keinen Standort geliefert. Erlauben Sie den Standortzugriff und versuchen Sie es erneut, oder sagen Sie dem Disponenten, wo Sie sind.",
        "failed": "Der Standort konnte nicht gesendet werden. Versuchen Sie es erneut, oder sagen Sie dem Disponenten, wo Sie sind.",
        "gone_title": "Dieser Link kann nicht mehr verwendet werden",
        "gone_body": (
            "Dieser Link ist abgelaufen, wurde zurückgezogen oder wurde bereits so oft wie erlaubt "
            "verwendet. Wenn Sie noch Hilfe brauchen, rufen Sie die Zentrale an, im Notfall die 112."
        ),
        "assist_title": "Pannenhilfe anfordern",
        "assist_intro": "Sagen Sie uns, wo Sie sind und was passiert ist; wir schicken die nächste verfügbare Hilfe.",
        "where": "Wo sind Sie?",
        "use_position": "Meinen aktuellen Standort verwenden",
        "position_set": "Standort erhalten",
        "address": "Oder geben Sie die Adresse oder Koordinaten ein",
        "vehicle": "Fahrzeug (Kennzeichen und Modell)",
        "what": "Was ist passiert?",
        "what_flat_tyre": "Reifenpanne",
        "what_battery": "Batterie",
        "what_engine": "Motorproblem",
        "what_accident": "Unfall ohne Verletzte",
        "what_locked_out": "Ausgesperrt",
        "what_other": "Anderes",
        "phone": "Ihre Telefonnummer",
        "submit": "Anfrage senden",
        "submitted": "Ihre Anfrage ist registriert. Verfolgen Sie sie hier:",
        "follow": "Meinen Fall verfolgen",
        "invalid": "Bitte prüfen:",
        "tracking_title": "Ihr Fall",
        "state": "Stand",
        "st_dispatching": "Die nächste Hilfe wird gesucht",
        "st_accepted": "Die Hilfe ist unterwegs",
        "st_unassigned": "Ein Disponent bearbeitet Ihren Fall",
        "st_closed": "Abgeschlossen",
        "st_open": "In Bearbeitung durch die Zentrale",
        "st_updated": "In Bearbeitung durch die Zentrale",
        "st_cancelled": "Storniert",
        "st_resolved": "Abgeschlossen",
        "provider": "Pannendienst",
        "eta": "Voraussichtliche Ankunft",
        "minutes": "Min.",
        "garage": "Werkstatt",
        "replacement": "Ersatzfahrzeug",
        "message": "Nachricht",
        "updated": "Aktualisiert",
        "live": "Diese Seite aktualisiert sich selbst.",
    },
}

WHATS = ("flat_tyre", "battery", "engine", "accident", "locked_out", "other")
"""What happened, as the form offers it; ``accident`` is an accident without injury."""

CAPABILITY_FOR = {
    "flat_tyre": "repair",
    "battery": "repair",
    "engine": "tow",
    "accident": "tow",
    "locked_out": "repair",
    "other": "tow",
}
"""The capability a case needs, by what happened."""


def pick_lang(query: str | None, accept_language: str | None, fallback: str | None) -> str:
    """The page's language: ``?lang=``, then Accept-Language by its q-values, then the link's own."""
    if query in LANGS:
        return query
    best: list[tuple[float, int, str]] = []
    for i, part in enumerate((accept_language or "").split(",")):
        tag, _, params = part.strip().partition(";")
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                q = 0.0
        primary = tag.strip().lower().split("-")[0]
        if primary in LANGS and q > 0:
            best.append((-q, i, primary))
    if best:
        return min(best)[2]
    return fallback if fallback in LANGS else "en"


def t(lang: str, key: str) -> str:
    return TEXTS.get(lang, TEXTS["en"]).get(key) or TEXTS["en"][key]
